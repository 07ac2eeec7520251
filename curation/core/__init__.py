"""The pipeline machinery: the stage contract, corpora on disk, engines, the plan and the run."""
