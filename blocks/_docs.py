"""Where the block documentation lives (shown as the block type's documentation link in the UI).

Set this to the published repository's docs when the project gets its public home.
"""

DOCS_URL = "https://github.com/siprec-backup/siprec-backup/blob/main/docs/configuration.md"
