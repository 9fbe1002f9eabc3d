"""The store's schema as forward-only named migrations, applied in order and recorded in `migrations`."""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "0001_initial",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            command TEXT NOT NULL,
            task TEXT NOT NULL,
            model TEXT NOT NULL,
            seed INTEGER NOT NULL,
            config TEXT NOT NULL,
            status TEXT NOT NULL,
            started_at TEXT NOT NULL,
            finished_at TEXT,
            result TEXT
        );
        CREATE TABLE programs (
            hash TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            source TEXT NOT NULL
        );
        CREATE TABLE improver_runs (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            parent_id INTEGER REFERENCES improver_runs(id),
            purpose TEXT NOT NULL,
            improver_hash TEXT NOT NULL REFERENCES programs(hash),
            initial_hash TEXT NOT NULL REFERENCES programs(hash),
            solution_hash TEXT REFERENCES programs(hash),
            error TEXT,
            lm_calls INTEGER,
            lm_responses INTEGER,
            utility_calls INTEGER,
            seconds REAL,
            started_at TEXT NOT NULL,
            finished_at TEXT
        );
        CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            improver_run_id INTEGER REFERENCES improver_runs(id),
            solution_hash TEXT NOT NULL REFERENCES programs(hash),
            task TEXT NOT NULL,
            split TEXT NOT NULL,
            score REAL NOT NULL,
            instances INTEGER NOT NULL,
            invalid INTEGER NOT NULL,
            timeouts INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            problem TEXT,
            failure TEXT,
            seconds REAL NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE lm_calls (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            improver_run_id INTEGER REFERENCES improver_runs(id),
            backend TEXT NOT NULL,
            request TEXT NOT NULL,
            responses TEXT NOT NULL,
            prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL,
            latency_seconds REAL NOT NULL,
            error TEXT,
            created_at TEXT NOT NULL
        );
        CREATE TABLE events (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs(id),
            improver_run_id INTEGER REFERENCES improver_runs(id),
            kind TEXT NOT NULL,
            detail TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE iterations (
            run_id TEXT NOT NULL REFERENCES runs(id),
            iteration INTEGER NOT NULL,
            improver_hash TEXT NOT NULL REFERENCES programs(hash),
            meta_utility_val REAL NOT NULL,
            meta_utility_test REAL NOT NULL,
            candidate_hash TEXT REFERENCES programs(hash),
            candidate_val REAL,
            candidate_test REAL,
            accepted INTEGER NOT NULL,
            error TEXT,
            PRIMARY KEY (run_id, iteration)
        );
        CREATE INDEX improver_runs_by_run ON improver_runs(run_id);
        CREATE INDEX evaluations_by_run ON evaluations(run_id);
        CREATE INDEX lm_calls_by_run ON lm_calls(run_id);
        """,
    ),
    (
        "0002_evaluation_violations",
        """
        ALTER TABLE evaluations ADD COLUMN violations TEXT NOT NULL DEFAULT '[]';
        """,
    ),
    (
        "0003_lm_call_cache_hits",
        """
        ALTER TABLE lm_calls ADD COLUMN cache_hit INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "0004_lm_call_costs",
        """
        ALTER TABLE lm_calls ADD COLUMN cost_usd REAL;
        """,
    ),
    (
        "0005_resume_and_lineage",
        """
        ALTER TABLE runs ADD COLUMN options TEXT;
        ALTER TABLE runs ADD COLUMN host TEXT;
        ALTER TABLE runs ADD COLUMN pid INTEGER;
        ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE iterations ADD COLUMN improver_run_id INTEGER REFERENCES improver_runs(id);
        ALTER TABLE lm_calls ADD COLUMN replayed INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE evaluations ADD COLUMN replayed INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX events_by_run ON events(run_id);
        CREATE INDEX iterations_by_run ON iterations(run_id);
        """,
    ),
    (
        "0006_run_process_identity",
        """
        ALTER TABLE runs ADD COLUMN process TEXT;
        """,
    ),
    (
        # What the run had spent when the iteration was recorded: a resumed run's cost limit starts there.
        "0007_iteration_spending",
        """
        ALTER TABLE iterations ADD COLUMN spent_usd REAL;
        """,
    ),
    (
        # Outputs the task's scorer raised on, apart from the invalid ones: a bug in the scorer is not the solution's.
        "0008_evaluations_scorer_errors",
        """
        ALTER TABLE evaluations ADD COLUMN scorer_errors INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE evaluations ADD COLUMN scorer_problems TEXT NOT NULL DEFAULT '[]';
        """,
    ),
    (
        # The Ray node that ran the solution (`--executor ray`); NULL when the host's own sandbox did.
        "0009_evaluation_nodes",
        """
        ALTER TABLE evaluations ADD COLUMN node TEXT;
        """,
    ),
)
