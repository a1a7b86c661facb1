"""The shape of a latency histogram's words, without numba: the arena layout (and `appliance doctor`,
which sizes the arena) need it without paying for the compiler's import."""

SUB_BITS = 5
SUB = 1 << SUB_BITS  # 32 sub-buckets per power of two
LINEAR = 2 * SUB  # 0..63 ns are exact
MAX_EXP = 39  # 2**40 ns (about 18 minutes) and above land in the last bucket
NBUCKETS = LINEAR + (MAX_EXP - SUB_BITS) * SUB
H_SUM = NBUCKETS
H_MAX = NBUCKETS + 1
H_COUNT = NBUCKETS + 2
HIST_WORDS = (NBUCKETS + 3 + 7) // 8 * 8  # whole cache lines
