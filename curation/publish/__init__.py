"""Versioned datasets with their dedup indexes: incremental refresh.

A publish directory holds numbered versions and a pointer to the newest:

```
PUBLISH_DIR/LATEST                 "v0002": the newest complete version (written last, atomically)
PUBLISH_DIR/v0001/kept.parquet     the whole dataset of that version (RECORD_SCHEMA)
                  manifest.json    version, parent, created, the input files consumed so far
                                   (path, size, sha256, version that consumed it), counts, the
                                   settings of every stored index, sha256 of every file written
                  index/index.json per index kind: the settings that produced it, its rows
                  index/<kind>.npy + <kind>_ids.parquet   exact: u64 keys [n]; minhash: u32
                                   signatures [num_perm, n]; semantic: f32 L2-normalised [n, dim]
                  diff.json        vs the parent: added ids, removed ids, jury score shifts
                  run_stats.json   stats.json of the run that produced the version
```

A refresh (1) ingests only the input files whose sha256 no published version consumed
(`refresh_inputs`); (2) runs the usual filters and in-run dedup on them; (3) the
`dedup_published` stage rejects the new records that duplicate a record of the latest version
(exact key, MinHash near duplicate, or embedding cosine, each with the run's dedup settings) or
reuse one of its ids; (4) jury, export, as usual; (5) `publish` writes version n+1 = version n's
records, unchanged and first, + the run's kept records, and extends the stored indexes: rows of
version n are reused, only the new records are hashed / signed / embedded (the stage's own
computations are reused when they are still in memory). An index stored under other settings
(view, normalisation, num_perm, ngram, model, ...) is rebuilt from the records, never reused.

Versions are append-only directories: a version is assembled under a temporary name, renamed
into place when complete, and only then does LATEST move to it, so a crash never leaves LATEST
pointing at a partial version; earlier versions are never written again. A refresh holds the
directory's lock (curation/publish/lock.py) from reading the latest version to moving LATEST, so
overlapping refreshes publish one after the other, each on top of the previous one; temporary
folders a killed publish left are removed by the next refresh.
"""
