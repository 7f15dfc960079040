"""What Kontext Bot can do, in a few lines: the answer to a mention asking for help and the
start of `/help`."""

from __future__ import annotations

# What a mention that asks for nothing gets back: every way in, in a few lines.
HELP = (
    "I edit and make images with FLUX.1 Kontext:\n"
    '- `/edit`: attach an image and say what to change, e.g. "make it a watercolor"\n'
    "- `/imagine`: make images from a description\n"
    "- `/combine`: put several images together into one\n"
    "- **Edit with Kontext**: in the Apps menu of any message with an image\n"
    "- Reply to one of my results (or to your image) mentioning me, with what to change; "
    "the **Edit** button under a result works too"
)
