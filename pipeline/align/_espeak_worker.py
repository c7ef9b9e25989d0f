"""Speak lines with libespeak-ng in a fresh process; stdlib only, run by path with ``python -I -S``.

libespeak-ng carries synthesis state from one utterance to the next (measured: the same
text gives different samples after other text was spoken), so the TTS+DTW aligner would
align the same song differently depending on the songs before it. A fresh process per
song makes the speech, and so the alignment, depend on the song alone (measured: 86 ms wall for
a two-line request, start-up and synthesis together).

Request (stdin, JSON): {"voice": "fr", "words_per_minute": 150, "pitch": 50, "lines": ["...", ...]}
Response (stdout): a JSON line {"sample_rate": r}, then per line a JSON line
{"samples": n, "events": [[utf8_byte_offset, sample], ...]} followed by n little-endian int16.
Exit status 3 with a message on stderr: no library, or no such voice.
"""

import ctypes
import ctypes.util
import json
import sys

_EVENT_LIST_TERMINATED, _EVENT_WORD = 0, 1  # espeak_EVENT_TYPE, speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS, _POS_CHARACTER, _CHARS_UTF8, _INITIALIZE_DONT_EXIT = 0x02, 1, 1, 0x8000
_RATE, _PITCH = 1, 3  # espeak_PARAMETER


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", ctypes.c_char * 8)]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


def main() -> int:
    request = json.loads(sys.stdin.read())
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("espeak-ng") or "libespeak-ng.so.1")
    except OSError as e:
        print(f"libespeak-ng not found ({e}); install it: apt-get install espeak-ng", file=sys.stderr)
        return 3
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, None, _INITIALIZE_DONT_EXIT)
    if rate <= 0:
        print("espeak_Initialize failed (espeak-ng-data missing?)", file=sys.stderr)
        return 3
    if lib.espeak_SetVoiceByName(request["voice"].encode()) != 0:
        print(f"espeak-ng has no voice {request['voice']!r}", file=sys.stderr)
        return 3
    lib.espeak_SetParameter(_RATE, int(request["words_per_minute"]), 0)
    lib.espeak_SetParameter(_PITCH, int(request.get("pitch", 50)), 0)
    out = sys.stdout.buffer
    out.write(json.dumps({"sample_rate": rate}).encode() + b"\n")
    for line in request["lines"]:
        chunks, events = [], []

        def on_audio(wav, n, ev, chunks=chunks, events=events):
            if n > 0:
                chunks.append(ctypes.string_at(wav, 2 * n))
            i = 0
            while ev[i].type != _EVENT_LIST_TERMINATED:
                if ev[i].type == _EVENT_WORD:
                    events.append([ev[i].text_position - 1, ev[i].sample])
                i += 1
            return 0

        callback = _CALLBACK(on_audio)
        lib.espeak_SetSynthCallback(callback)
        data = line.encode("utf-8") + b"\0"
        if lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None) != 0:
            print(f"espeak_Synth failed on {line!r}", file=sys.stderr)
            return 4
        lib.espeak_Synchronize()
        audio = b"".join(chunks)
        out.write(json.dumps({"samples": len(audio) // 2, "events": events}).encode() + b"\n")
        out.write(audio)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
