"""The one timing rule of the peer benchmarks: a warm-up call, then the median of `reps`."""
import time


def median_ms(fn, reps):
    fn()  # warm-up: first-touch, thread start, kernel selection
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    times.sort()
    return times[len(times) // 2]
