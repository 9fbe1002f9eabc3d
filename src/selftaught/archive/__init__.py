"""A recorded run as one file to take to another machine: `export_run` writes it, `import_run` checks and adds it."""

from selftaught.archive.export_import import ArchiveSummary, export_run, import_run

__all__ = ["ArchiveSummary", "export_run", "import_run"]
