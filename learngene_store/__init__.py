"""Persistence for fine-zoo: the SQL registry (learngenes, datasets, jobs, checkpoints), its
migrations, and the content-addressed blob store. Imports nothing from `fine` and never torch."""
