"""The alignment recursion of the TTS+DTW aligner, compiled with numba (a Python loop would take minutes).

States: speech frame ``i`` at song frame ``j``, or gap ``k`` (before line ``k``, or after the
last line when ``k`` = number of lines). Costs are kept for one song frame at a time;
the back-pointers (one byte per cell) are kept whole for the trace-back.
"""

import numba
import numpy as np

_STAY, _NEXT, _SKIP, _FROM_GAP = 0, 1, 2, 3


@numba.njit(cache=True, nogil=True)
def align_path(song, speech, v, line_start, line_end, nonvocal_cost, gap_cost, gap_vocal_cost, skip_cost,
               anchored, anchor_ok, anchor_cost):
    """Best path as, per song frame, the speech frame it is matched to (-1 = in a gap); and its cost.

    ``anchored`` (per line) and ``anchor_ok`` (line x song frame): for an anchored line, entering
    its first speech frame at a song frame that is not ok costs ``anchor_cost``.
    """
    d, n = song.shape
    m = speech.shape[1]
    n_lines = line_start.size
    inf = np.inf
    starts_line = np.full(m, -1, np.int64)
    for k in range(n_lines):
        starts_line[line_start[k]] = k
    prev = np.full(m, inf)
    cur = np.full(m, inf)
    gprev = np.full(n_lines + 1, inf)
    gcur = np.full(n_lines + 1, inf)
    back = np.zeros((n, m), np.int8)
    gback = np.zeros((n, n_lines + 1), np.int8)
    for j in range(n):
        gap = gap_cost + gap_vocal_cost * v[j]
        mismatch = nonvocal_cost * (1.0 - v[j])
        for k in range(n_lines + 1):
            if j == 0:
                best = 0.0 if k == 0 else inf
                arg = 0
            else:
                best = gprev[k]
                arg = 0
                if k > 0 and prev[line_end[k - 1]] < best:
                    best = prev[line_end[k - 1]]
                    arg = 1
            gcur[k] = best + gap
            gback[j, k] = arg
        for i in range(m):
            best = inf
            arg = _STAY
            k = starts_line[i]
            # entering an anchored line outside its window pays anchor_cost (staying in it does not)
            enter = anchor_cost if k >= 0 and anchored[k] and not anchor_ok[k, j] else 0.0
            if j == 0:
                if i == 0:
                    best = enter
            else:
                if prev[i] < best:
                    best = prev[i]
                if i >= 1 and prev[i - 1] + enter < best:
                    best = prev[i - 1] + enter
                    arg = _NEXT
                if i >= 2 and k < 0 and starts_line[i - 1] < 0 and prev[i - 2] + skip_cost < best:  # a line's first frame is never skipped
                    best = prev[i - 2] + skip_cost
                    arg = _SKIP
                if k >= 0 and gprev[k] + enter < best:
                    best = gprev[k] + enter
                    arg = _FROM_GAP
            if best < inf:
                dot = 0.0
                for c in range(d):
                    dot += song[c, j] * speech[c, i]
                cur[i] = best + 0.5 * (1.0 - dot) + mismatch
            else:
                cur[i] = inf
            back[j, i] = arg
        prev, cur = cur, prev
        gprev, gcur = gcur, gprev
    path = np.full(n, -1, np.int64)
    j = n - 1
    in_gap = gprev[n_lines] < prev[m - 1]
    cost = gprev[n_lines] if in_gap else prev[m - 1]
    i = m - 1
    k = n_lines
    while j >= 0:
        if in_gap:
            if gback[j, k] == 1:
                in_gap = False
                i = line_end[k - 1]
        else:
            path[j] = i
            a = back[j, i]
            if a == _NEXT:
                i -= 1
            elif a == _SKIP:
                i -= 2
            elif a == _FROM_GAP:
                in_gap = True
                k = starts_line[i]
        j -= 1
    return path, cost
