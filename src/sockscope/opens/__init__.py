"""`sockscope opens`: which processes open which files, as it happens."""
