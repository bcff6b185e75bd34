# Smoke test of `nsa bench` (ctest: nsa_bench_smoke): a tiny configuration of every phase
# that runs in well under a second, then checks that the JSON has the documented schema
# and that --plot wrote a PNG (OUT with .png for .json; the file must start with the PNG
# signature and an IHDR chunk):
#   {"machine": {"fma_peak_gflops", "dram_read_gbs", "l3_read_gbs", "l3_bytes", "threads", "cpu"},
#    "results": [{"T", "phase", "impl", "dtype", "ms", "ms_min", "ms_max", "gflops", "tokens_read",
#                 "bytes", "roofline", "bound"}]}
# Usage: cmake -DNSA=<path of the nsa binary> -DOUT=<json file> -P test_bench_cli.cmake
cmake_minimum_required(VERSION 3.19)  # string(JSON)
if(NOT NSA OR NOT OUT)
  message(FATAL_ERROR "usage: cmake -DNSA=... -DOUT=... -P test_bench_cli.cmake")
endif()
string(REGEX REPLACE "\\.json$" "" png "${OUT}")
set(png "${png}.png")
file(REMOVE "${OUT}" "${png}")
execute_process(
  COMMAND "${NSA}" bench --tokens 512 --heads 2 --dk 32 --dv 32 --reps 1 --decode-steps 4
          --phases forward,backward,decode --bf16 --json "${OUT}" --plot "${png}"
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "nsa bench failed (${rc}):\n${stdout}\n${stderr}")
endif()
message(STATUS "${stdout}")
file(READ "${OUT}" json)

foreach(key fma_peak_gflops dram_read_gbs l3_read_gbs l3_bytes threads cpu)
  string(JSON value ERROR_VARIABLE err GET "${json}" machine ${key})
  if(err)
    message(FATAL_ERROR "machine.${key} missing: ${err}")
  endif()
endforeach()
string(JSON peak GET "${json}" machine fma_peak_gflops)
if(NOT peak GREATER 0)
  message(FATAL_ERROR "machine.fma_peak_gflops = ${peak}, expected > 0")
endif()

string(JSON n LENGTH "${json}" results)
if(NOT n EQUAL 10)  # 3 phases x (dense, nsa), and the bf16 forward and decode of both
  message(FATAL_ERROR "expected 10 results, got ${n}")
endif()
math(EXPR last "${n} - 1")
set(seen "")
foreach(i RANGE ${last})
  foreach(key shape T phase impl dtype ms ms_min ms_max gflops tokens_read bytes roofline bound)
    string(JSON value ERROR_VARIABLE err GET "${json}" results ${i} ${key})
    if(err)
      message(FATAL_ERROR "results[${i}].${key} missing: ${err}")
    endif()
  endforeach()
  string(JSON T GET "${json}" results ${i} T)
  string(JSON phase GET "${json}" results ${i} phase)
  string(JSON impl GET "${json}" results ${i} impl)
  string(JSON dtype GET "${json}" results ${i} dtype)
  string(JSON ms GET "${json}" results ${i} ms)
  string(JSON ms_min GET "${json}" results ${i} ms_min)
  string(JSON ms_max GET "${json}" results ${i} ms_max)
  string(JSON reads GET "${json}" results ${i} tokens_read)
  string(JSON roof GET "${json}" results ${i} roofline)
  string(JSON bound GET "${json}" results ${i} bound)
  string(JSON bytes GET "${json}" results ${i} bytes)
  if(NOT roof GREATER 0 OR NOT bytes GREATER 0 OR NOT bound MATCHES "^(compute|L3|DRAM)$")
    message(FATAL_ERROR "results[${i}]: roofline=${roof} bound=${bound} bytes=${bytes}")
  endif()
  if(NOT T EQUAL 512 OR NOT phase MATCHES "^(forward|backward|decode)$" OR NOT impl MATCHES "^(dense|nsa)$"
     OR NOT dtype MATCHES "^(fp32|bf16)$")
    message(FATAL_ERROR "results[${i}]: T=${T} phase=${phase} impl=${impl} dtype=${dtype}")
  endif()
  if(NOT ms GREATER 0 OR ms_min GREATER ms OR ms GREATER ms_max OR NOT reads GREATER 0)
    message(FATAL_ERROR "results[${i}]: ms=${ms} [${ms_min}, ${ms_max}] tokens_read=${reads}")
  endif()
  list(APPEND seen "${phase}/${impl}/${dtype}")
endforeach()
foreach(want forward/dense/fp32 forward/nsa/fp32 backward/dense/fp32 backward/nsa/fp32 decode/dense/fp32
             decode/nsa/fp32 forward/dense/bf16 forward/nsa/bf16 decode/dense/bf16 decode/nsa/bf16)
  if(NOT want IN_LIST seen)
    message(FATAL_ERROR "no result for ${want}")
  endif()
endforeach()

# --plot: a PNG (signature 89 50 4E 47 0D 0A 1A 0A, then the 13-byte IHDR chunk), of a
# plausible size for a 1000 x 620 chart.
if(NOT EXISTS "${png}")
  message(FATAL_ERROR "--plot did not write ${png}")
endif()
file(READ "${png}" head LIMIT 16 HEX)
string(JSON dram GET "${json}" machine dram_read_gbs)
if(NOT dram GREATER 0)
  message(FATAL_ERROR "machine.dram_read_gbs = ${dram}, expected > 0")
endif()
# Every row's roofline; a speed-up over a dense row below half of its bound is starred and
# explained under the table.
if(NOT stdout MATCHES "roofline" OR NOT stdout MATCHES "[0-9]+% (compute|L3|DRAM)")
  message(FATAL_ERROR "no roofline column in the table:\n${stdout}")
endif()
if(stdout MATCHES "[0-9]x\\*" AND NOT stdout MATCHES "overstates NSA's gain")
  message(FATAL_ERROR "a starred speed-up without its note:\n${stdout}")
endif()
if(NOT stdout MATCHES "dense decode fp32 T=512: reads [0-9.]+ MB per step" OR
   NOT stdout MATCHES "dense decode bf16 T=512: reads [0-9.]+ MB per step")
  message(FATAL_ERROR "no dense decode bandwidth line in the table:\n${stdout}")
endif()
if(NOT stdout MATCHES "bf16 vs fp32: forward nsa" OR NOT stdout MATCHES "bf16 vs fp32: decode nsa")
  message(FATAL_ERROR "no bf16 / fp32 line in the table:\n${stdout}")
endif()
if(NOT head STREQUAL "89504e470d0a1a0a0000000d49484452")
  message(FATAL_ERROR "${png} does not start with the PNG signature and IHDR: ${head}")
endif()
file(SIZE "${png}" png_size)
if(png_size LESS 2000)
  message(FATAL_ERROR "${png} is only ${png_size} bytes")
endif()

# An unwritable --plot path fails before the measurements, with a message naming it.
execute_process(
  COMMAND "${NSA}" bench --tokens 64 --heads 1 --dk 16 --dv 16 --reps 1 --phases forward
          --plot "${png}.missing-dir/x.png"
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(rc EQUAL 0 OR NOT stderr MATCHES "missing-dir")
  message(FATAL_ERROR "bench --plot into a missing folder: rc=${rc}\n${stdout}\n${stderr}")
endif()

# --paper: the paper's shape, then llama3-8b's forward and decode (here at one tiny T), each
# with its own table; the JSON names every result's shape.
execute_process(
  COMMAND "${NSA}" bench --paper --tokens 128 --phases forward,decode --reps 1 --decode-steps 2 --threads 2
          --json "${OUT}.paper.json"
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(NOT rc EQUAL 0 OR NOT stdout MATCHES "paper: H=16 H_kv=1 d_k=192 d_v=128" OR
   NOT stdout MATCHES "llama3-8b: H=32 H_kv=8 d_k=128 d_v=128")
  message(FATAL_ERROR "bench --paper without its real shape: rc=${rc}\n${stdout}\n${stderr}")
endif()
file(READ "${OUT}.paper.json" paper_json)
string(JSON n LENGTH "${paper_json}" results)
set(shapes "")
math(EXPR last "${n} - 1")
foreach(i RANGE ${last})
  string(JSON s GET "${paper_json}" results ${i} shape)
  list(APPEND shapes "${s}")
endforeach()
list(REMOVE_DUPLICATES shapes)
if(NOT n EQUAL 8 OR NOT shapes STREQUAL "paper;llama3-8b")
  message(FATAL_ERROR "bench --paper JSON: ${n} results, shapes ${shapes}")
endif()

# --shape: a released model's shape, named in the header; an unknown name is refused.
execute_process(
  COMMAND "${NSA}" bench --shape llama3-8b --tokens 256 --reps 1 --decode-steps 2 --phases decode --threads 2
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(NOT rc EQUAL 0 OR NOT stdout MATCHES "H=32 H_kv=8 d_k=128 d_v=128")
  message(FATAL_ERROR "bench --shape llama3-8b: rc=${rc}\n${stdout}\n${stderr}")
endif()
execute_process(
  COMMAND "${NSA}" bench --shape llama4 --tokens 256
  RESULT_VARIABLE rc OUTPUT_VARIABLE stdout ERROR_VARIABLE stderr)
if(rc EQUAL 0 OR NOT stderr MATCHES "unknown --shape 'llama4'")
  message(FATAL_ERROR "bench --shape llama4 was not refused: rc=${rc}\n${stderr}")
endif()
