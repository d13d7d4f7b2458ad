"""The ending every benchmark shares: print its markdown section and, with --out, write it atomically."""
from typing import List, Optional


def emit_markdown(lines: List[str], out: Optional[str]) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        from objcrop.io import write_text_atomic

        write_text_atomic(out, text)
