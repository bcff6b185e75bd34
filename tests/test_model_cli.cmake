# Smoke test of the model commands (ctest: nsa_model_cli_smoke), the CI's "small training
# run": trains a tiny NSA model for a few steps on a generated text, resumes it, converts a
# tiny full model to NSA, evaluates (loss + passkey grid + heatmap), generates through the
# decode cache and inspects the selection, checking every output file and the exit codes.
# A truncated checkpoint must be refused with a message naming the problem.
# Usage: cmake -DNSA=<nsa binary> -DWORK=<scratch folder> -P test_model_cli.cmake
cmake_minimum_required(VERSION 3.19)
if(NOT NSA OR NOT WORK)
  message(FATAL_ERROR "usage: cmake -DNSA=... -DWORK=... -P test_model_cli.cmake")
endif()
file(REMOVE_RECURSE "${WORK}")
file(MAKE_DIRECTORY "${WORK}")

# A text of ~60 kB with some structure to learn.
set(text "")
foreach(i RANGE 1 600)
  math(EXPR a "(${i} * 37) % 101")
  string(APPEND text "  ${i} And the word ${a} was spoken unto them, and they heard it.\n")
endforeach()
file(WRITE "${WORK}/text.txt" "${text}")

function(run_nsa)
  execute_process(COMMAND "${NSA}" ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "nsa ${ARGN} failed (${rc}):\n${out}\n${err}")
  endif()
  message(STATUS "nsa ${ARGN}:\n${out}")
  set(last_out "${out}" PARENT_SCOPE)
  set(last_err "${err}" PARENT_SCOPE)
endfunction()

set(shape --d-model 32 --layers 2 --heads 2 --kv-heads 1 --dk 16 --dv 16 --mlp-hidden 64
          --block-len 8 --stride 4 --sel-block 16 --top-n 3 --window 32)
set(run --data "${WORK}/text.txt" --batch 2 --seq 128 --warmup 2 --eval-every 4 --eval-batches 1 --threads 2)

run_nsa(train ${shape} ${run} --attention nsa --steps 8 --out "${WORK}/nsa")
foreach(f checkpoint.safetensors loss.csv loss.png run.txt)
  if(NOT EXISTS "${WORK}/nsa/${f}")
    message(FATAL_ERROR "nsa train wrote no ${f}")
  endif()
endforeach()
file(STRINGS "${WORK}/nsa/loss.csv" rows)
list(LENGTH rows n)
if(NOT n EQUAL 9)
  message(FATAL_ERROR "loss.csv has ${n} lines, expected a header and 8 steps")
endif()

# Resume to 12 steps: the CSV continues.
run_nsa(train --resume "${WORK}/nsa/checkpoint.safetensors" --data "${WORK}/text.txt" --steps 12
        --out "${WORK}/nsa" --threads 2)
file(STRINGS "${WORK}/nsa/loss.csv" rows)
list(LENGTH rows n)
if(NOT n EQUAL 13)
  message(FATAL_ERROR "after resuming, loss.csv has ${n} lines, expected 13")
endif()

# full -> nsa conversion.
run_nsa(train ${shape} ${run} --attention full --steps 4 --out "${WORK}/full")
run_nsa(train ${shape} ${run} --attention nsa --steps 4 --init-from "${WORK}/full/checkpoint.safetensors"
        --out "${WORK}/converted")
if(NOT last_err MATCHES "keep their fresh init")
  message(FATAL_ERROR "conversion did not report the fresh tensors:\n${last_err}")
endif()

run_nsa(eval "${WORK}/nsa/checkpoint.safetensors" --data "${WORK}/text.txt" --seq 128 --val-windows 2
        --contexts 128,256 --depths 0,0.5,1 --trials 2 --heatmap "${WORK}/needle.png" --json "${WORK}/eval.json")
if(NOT last_out MATCHES "validation loss" OR NOT EXISTS "${WORK}/needle.png" OR NOT EXISTS "${WORK}/eval.json")
  message(FATAL_ERROR "nsa eval output incomplete:\n${last_out}")
endif()

run_nsa(generate "${WORK}/nsa/checkpoint.safetensors" --prompt "And the" --tokens 40 --seed 3)
string(LENGTH "${last_out}" generated)
if(generated LESS 40)
  message(FATAL_ERROR "nsa generate printed ${generated} bytes, expected the prompt and 40 more")
endif()

run_nsa(inspect "${WORK}/nsa/checkpoint.safetensors" --file "${WORK}/text.txt" --max-tokens 300
        --map "${WORK}/map.png")
if(NOT last_out MATCHES "selected blocks" OR NOT EXISTS "${WORK}/map.png")
  message(FATAL_ERROR "nsa inspect output incomplete:\n${last_out}")
endif()

run_nsa(plot-loss --out "${WORK}/compare.png" "nsa=${WORK}/nsa/loss.csv" "full=${WORK}/full/loss.csv")
run_nsa(plot-loss --passkey --out "${WORK}/passkey.png" "nsa=${WORK}/nsa/loss.csv" "full=${WORK}/full/loss.csv")
foreach(png nsa/loss.png needle.png map.png compare.png passkey.png)
  file(READ "${WORK}/${png}" head LIMIT 8 HEX)
  if(NOT head STREQUAL "89504e470d0a1a0a")
    message(FATAL_ERROR "${png} is not a PNG (starts with ${head})")
  endif()
endforeach()

# A truncated checkpoint is refused with a clear message, and nothing is written.
file(COPY_FILE "${WORK}/nsa/checkpoint.safetensors" "${WORK}/truncated.safetensors")
execute_process(COMMAND truncate -s 1000 "${WORK}/truncated.safetensors")
execute_process(COMMAND "${NSA}" generate "${WORK}/truncated.safetensors" --tokens 4
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(rc EQUAL 0 OR NOT err MATCHES "truncated")
  message(FATAL_ERROR "a truncated checkpoint was not refused clearly (rc ${rc}):\n${err}")
endif()
message(STATUS "truncated checkpoint: ${err}")
