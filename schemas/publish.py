"""The `publish:` section: where a curated dataset is published as numbered versions.

```yaml
publish:
  dir: datasets/demo     # relative to the config file; holds v0001/, v0002/, ... and LATEST
```

A run with this section is a refresh: it ingests only the input files the latest version has
not consumed yet (by content hash), dedups them against that version's stored indexes as well
as against each other, and publishes a new version (curation/publish/: dedup.py is the stage).
One refresh at a time holds the directory (`lock`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Strict


class PublishConfig(Strict):
    dir: str = Field(
        description="Publish directory (versions v0001, v0002, ... and the LATEST pointer), relative to the config file."
    )
    lock: Literal["wait", "fail"] = Field(
        "wait",
        description="Another refresh of the same dir is running: wait for it (then dedup against its version), "
        "or fail at once (exit 2).",
    )
