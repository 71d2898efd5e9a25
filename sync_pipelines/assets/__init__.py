"""Asset factories: each builds Dagster assets from the stack file and adds no data work of its own."""
