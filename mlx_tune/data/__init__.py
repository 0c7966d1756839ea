"""Stage 1, data: Python repositories and shipped pages -> tool-use training records -> phase splits.

- ``repos``: take repositories (installed packages or clones) into ``data/repos/``.
- ``repo_index``, ``extract``, ``code_facts``: what a repository holds (files, symbols, facts), by
  ``ast`` and text only, never by importing it.
- ``questions``, ``example_templates``, ``drafts``: questions about a repository and the tool calls
  (grep / read) or direct answers that answer them.
- ``examples``: the repository generator (``mlx-tune data generate``); ``html_examples`` (pages in
  ``html_data/``) and ``stdlib_direct`` (``stdlib_data/``) are the other two sources.
- ``data_quality``, ``datacheck``: checks of single records and of whole files.
- ``merge``: a phase's inputs -> deduplicated, leak-free train/valid/test splits.
"""
