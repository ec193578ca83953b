#!/usr/bin/env python3
"""Write clip-tokenizer/tests/fixtures/open_clip_ids.json: reference token ids from open_clip.

Run by hand when the test strings change; the Rust tests compare against the file.
The reference is open_clip's own SimpleTokenizer (with its bundled
bpe_simple_vocab_16e6.txt.gz, not our copy of the vocabulary), loaded from the
open_clip_torch wheel without installing it or PyTorch: tokenizer.py only needs
torch for building the output array, which a numpy stand-in does here.

    python3 -m venv /tmp/tokref
    /tmp/tokref/bin/pip install ftfy==6.3.1 regex numpy
    /tmp/tokref/bin/pip download --no-deps open-clip-torch==3.3.0 -d /tmp/tokref_dl
    /tmp/tokref/bin/python scripts/gen_tokenizer_fixture.py /tmp/tokref_dl/open_clip_torch-3.3.0-py3-none-any.whl

It also checks that ../shared/models/clip_tokenizer/clip-vocab.json assigns every
token the id open_clip does (special tokens are spelt differently there).
"""
import importlib.util
import json
import os
import sys
import tempfile
import types
import zipfile

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO_ROOT, "clip-tokenizer", "tests", "fixtures", "open_clip_ids.json")
VOCAB = os.path.join(REPO_ROOT, "..", "shared", "models", "clip_tokenizer", "clip-vocab.json")

TEXTS = [
    "a photo of a dog",
    "A Photo Of A DOG",
    "",
    "   ",
    "a photo of a cat.",
    "two dogs, three cats; and 1 bird!",
    "it's the dog's bone, isn't it? they're here, we've gone, I'm sure, you'll see, he'd go",
    "IT'S LOUD",
    "rock'n'roll o'clock",
    "the year 2024 and 3.14159 and 1,000,000 people",
    "room #42 @ 9:30pm (floor -3) 100%",
    "hello...world!!! ??? --- ***",
    "e-mail: someone@example.com, url: https://example.com/a_b?c=d&e=f",
    "café résumé naïve façade",
    "cafe\u0301 (decomposed accent)",
    "straße über ñandú",
    "日本の写真 東京タワー",
    "фотография собаки",
    "صورة كلب",
    "a dog 🐕 and a cat 🐈‍⬛ 👍🏽",
    "ＦＵＬＬＷＩＤＴＨ ｔｅｘｔ １２３",
    "ﬁne ﬂowers in the ﬀ",
    "don\u2019t \u201cquote\u201d me",
    "fish &amp; chips &lt;3 &#39;quoted&#39; &eacute;",
    "double &amp;amp; escaped",
    "AT&T &copy 2020",
    "<b>bold</b> &amp; more",
    "tabs\tand\nnewlines\r\nand\u00a0nbsp",
    "control\x00chars\x07here\ufeff",
    "c1 \x93quoted\x94 \x85",
    "\x1b[31mred text\x1b[0m",
    "ǅemal and ĳs",
    "ΣΊΣΥΦΟΣ final sigma",
    "x" * 300,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    " ".join(["a photo of a big brown dog running on the beach"] * 12),
    "1234567890" * 10,
]


def load_open_clip(wheel: str, workdir: str):
    with zipfile.ZipFile(wheel) as z:
        z.extract("open_clip/tokenizer.py", workdir)
        z.extract("open_clip/bpe_simple_vocab_16e6.txt.gz", workdir)
    torch = types.ModuleType("torch")
    torch.long = np.int64
    torch.LongTensor = np.ndarray
    torch.Tensor = np.ndarray
    torch.zeros = lambda *shape, dtype=None: np.zeros(shape, dtype=np.int64)
    torch.tensor = lambda data: np.asarray(data, dtype=np.int64)
    sys.modules["torch"] = torch
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer",
                                                  os.path.join(workdir, "open_clip", "tokenizer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()


def check_vocab(tokenizer) -> None:
    with open(VOCAB, encoding="utf-8") as f:
        ours = json.load(f)
    theirs = dict(tokenizer.encoder)
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    theirs = {specials.get(token, token): i for token, i in theirs.items()}
    if ours != theirs:
        diff = [t for t in set(ours) | set(theirs) if ours.get(t) != theirs.get(t)]
        raise SystemExit(f"{VOCAB} differs from open_clip's vocabulary in {len(diff)} tokens, e.g. {diff[:5]}")
    print(f"{VOCAB}: all {len(ours)} ids equal open_clip's")


def main(argv) -> int:
    if len(argv) != 2:
        print(__doc__)
        return 2
    with tempfile.TemporaryDirectory() as workdir:
        tokenizer = load_open_clip(argv[1], workdir)
        check_vocab(tokenizer)
        ids = tokenizer(TEXTS)
    cases = [{"text": text, "ids": [int(i) for i in row]} for text, row in zip(TEXTS, ids)]
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    header = {"generator": "scripts/gen_tokenizer_fixture.py",
              "reference": f"open_clip SimpleTokenizer from {os.path.basename(argv[1])}"}
    # One case per line keeps the file small and its diffs readable.
    body = ",\n".join("  " + json.dumps(case, ensure_ascii=False) for case in cases)
    with open(OUT, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, ensure_ascii=False)[:-1] + ', "cases": [\n' + body + "\n]}\n")
    print(f"wrote {len(cases)} cases to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
