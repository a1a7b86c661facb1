"""Operations: what runs around the appliance rather than in it (doctor, warmup, install, drain)."""
