"""Runtime: the arena, its rings and tables, CPU placement and the pinned GIL-free hot threads."""
