"""`harness view`: a static HTML site of every run, with a sample browser (see site.py)."""
