"""The trajectory record (one definition of its shape) and the trajectory store (Parquet, MongoDB)."""
