"""What every stage after ingest reads: the manifest contract, items, label CSVs and label budgets, the
screen of ingested files, volume reading, and the transforms training, evaluation, scoring and the served
model share. Nothing here imports a stage."""
