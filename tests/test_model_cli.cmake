# Smoke test of the model commands (ctest: nsa_model_cli_smoke), the CI's "small training
# run": trains a tiny NSA model for a few steps on a generated text, resumes it, converts a
# tiny full model to NSA (abruptly and with the sparsify schedule), trains on a text + MQAR
# mix with the token shift and compression first, evaluates (loss + passkey or MQAR grid +
# heatmap + JSON), generates through the decode cache and inspects the selection (also on
# an MQAR example), checking every output file and the exit codes. Bad task specs and
# options must be refused with a message naming them.
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

run_nsa(train ${shape} ${run} --attention nsa --steps 4 --init-from "${WORK}/full/checkpoint.safetensors"
        --sparsify-steps 3 --out "${WORK}/converted_gradual")

# The recall task mix, the token shift and compression first; the CSV has the MQAR columns.
run_nsa(train ${shape} ${run} --attention nsa --steps 6 --task text:0.5,mqar:0.5 --mqar-pairs 4 --token-shift 1
        --selection-delay 2 --selection-ramp 2 --out "${WORK}/recall")
file(STRINGS "${WORK}/recall/loss.csv" rows)
list(GET rows 0 header)
if(NOT header MATCHES "mqar_loss,recall_accuracy$")
  message(FATAL_ERROR "loss.csv header lacks the recall columns: ${header}")
endif()
file(READ "${WORK}/recall/run.txt" run_txt)
if(NOT run_txt MATCHES "tasks=text:0.5,mqar:0.5" OR NOT run_txt MATCHES "selection_delay=2" OR
   NOT run_txt MATCHES "token_shift=1")
  message(FATAL_ERROR "run.txt lacks the task mix, schedule or token shift:\n${run_txt}")
endif()
run_nsa(eval "${WORK}/recall/checkpoint.safetensors" --data "${WORK}/text.txt" --seq 128 --val-windows 2
        --task mqar --mqar-pairs 4 --contexts 128,256 --depths 0,1 --trials 3 --heatmap "${WORK}/mqar.png"
        --json "${WORK}/mqar.json")
file(READ "${WORK}/mqar.json" mqar_json)
if(NOT last_out MATCHES "within the window" OR NOT mqar_json MATCHES "\"accuracy_beyond\"" OR
   NOT EXISTS "${WORK}/mqar.png")
  message(FATAL_ERROR "nsa eval --task mqar output incomplete:\n${last_out}\n${mqar_json}")
endif()
run_nsa(inspect "${WORK}/recall/checkpoint.safetensors" --data "${WORK}/text.txt" --mqar 128 --mqar-pairs 4)
if(NOT last_out MATCHES "the pair's block is selected by" OR NOT last_out MATCHES "answers right")
  message(FATAL_ERROR "nsa inspect --mqar output incomplete:\n${last_out}")
endif()
run_nsa(plot-loss --recall --out "${WORK}/recall.png" "recall=${WORK}/recall/loss.csv")

# Bad options are refused, naming the problem.
foreach(bad "--task;text:1,txt:1;unknown task" "--task;mqar:-1;weight" "--mqar-pairs;65;mqar_pairs"
            "--token-shift;9;token_shift" "--selection-delay;-1;selection_delay")
  list(GET bad 0 flag)
  list(GET bad 1 value)
  list(GET bad 2 expect)
  execute_process(COMMAND "${NSA}" train ${shape} ${run} --steps 1 ${flag} ${value} --out "${WORK}/bad"
                  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(rc EQUAL 0 OR NOT err MATCHES "${expect}")
    message(FATAL_ERROR "train ${flag} ${value} was not refused naming '${expect}' (rc ${rc}):\n${err}")
  endif()
endforeach()

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
foreach(png nsa/loss.png needle.png map.png compare.png passkey.png mqar.png recall.png)
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
