-- carat-catalogd store, migration 001.
--
-- One SQLite file (WAL mode). The daemon is the only writer; store
-- applications may open it read-only (`?mode=ro`), although the socket API
-- is the supported way to read the catalog. See schema/README.md.
--
-- Conventions: codes are TEXT with leading zeros kept; money is INTEGER
-- centavos; validity is INTEGER days; times are RFC 3339 UTC TEXT
-- ('2026-11-22T11:00:00Z'); optional Carat fields are NULL when Carat did
-- not send them. `position` keeps Carat's order.

-- The catalog version held per recharge type. A row exists only once a
-- complete catalog of that type was committed.
CREATE TABLE catalog_version (
    recharge_type TEXT PRIMARY KEY CHECK (recharge_type IN ('normal', 'others', 'invoice')),
    general_hash  TEXT NOT NULL CHECK (length(general_hash) = 16),
    synced_at     TEXT NOT NULL,   -- when this version was fetched and committed
    checked_at    TEXT NOT NULL    -- last time Carat confirmed it current
) STRICT;

-- Operators. type_code/type_name are NULL for `normal`.
CREATE TABLE dealer (
    recharge_type TEXT NOT NULL,
    code          TEXT NOT NULL CHECK (length(code) = 3),
    name          TEXT NOT NULL,
    type_code     TEXT,
    type_name     TEXT,
    position      INTEGER NOT NULL,
    PRIMARY KEY (recharge_type, code)
) STRICT;

-- Branches (products) of `others` and `invoice` dealers.
CREATE TABLE branch (
    recharge_type TEXT NOT NULL,
    dealer_code   TEXT NOT NULL,
    code          TEXT NOT NULL CHECK (length(code) = 11),
    name          TEXT NOT NULL,
    position      INTEGER NOT NULL,
    PRIMARY KEY (recharge_type, dealer_code, code),
    FOREIGN KEY (recharge_type, dealer_code) REFERENCES dealer (recharge_type, code) ON DELETE CASCADE
) STRICT;

-- Branch data: one row per (dealer, DDD) for `normal`, per (dealer, branch)
-- for `others`. Exactly one of ddd / branch_code is set.
CREATE TABLE branch_data (
    id            INTEGER PRIMARY KEY,
    recharge_type TEXT NOT NULL,
    dealer_code   TEXT NOT NULL,
    ddd           TEXT CHECK (ddd IS NULL OR length(ddd) = 2),
    branch_code   TEXT CHECK (branch_code IS NULL OR length(branch_code) = 11),
    CHECK ((ddd IS NULL) <> (branch_code IS NULL)),
    UNIQUE (recharge_type, dealer_code, ddd, branch_code),
    FOREIGN KEY (recharge_type, dealer_code) REFERENCES dealer (recharge_type, code) ON DELETE CASCADE
) STRICT;
CREATE INDEX branch_data_by_ddd ON branch_data (recharge_type, ddd);

-- `general[].message` of a branch-data answer.
CREATE TABLE branch_message (
    branch_data_id INTEGER NOT NULL REFERENCES branch_data (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    message        TEXT NOT NULL,
    PRIMARY KEY (branch_data_id, position)
) STRICT;

-- Positive-confirmation questions: of the dealer listing (branch_data_id
-- NULL) or of one branch-data answer.
CREATE TABLE question (
    recharge_type  TEXT NOT NULL,
    branch_data_id INTEGER REFERENCES branch_data (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    id             TEXT NOT NULL,
    display        TEXT NOT NULL,
    rule           TEXT,
    type           TEXT,
    min            INTEGER,
    max            INTEGER,
    min_value      INTEGER,
    max_value      INTEGER
) STRICT;
CREATE INDEX question_by_owner ON question (recharge_type, branch_data_id);

CREATE TABLE category (
    id             INTEGER PRIMARY KEY,
    branch_data_id INTEGER NOT NULL REFERENCES branch_data (id) ON DELETE CASCADE,
    position       INTEGER NOT NULL,
    code           TEXT NOT NULL,
    description    TEXT NOT NULL
) STRICT;
CREATE INDEX category_by_branch_data ON category (branch_data_id);

-- A value range: any amount from min_amount to max_amount centavos.
CREATE TABLE amount_range (
    category_id         INTEGER NOT NULL REFERENCES category (id) ON DELETE CASCADE,
    position            INTEGER NOT NULL,
    amount_key          TEXT NOT NULL,
    min_amount          INTEGER NOT NULL CHECK (min_amount >= 0),
    max_amount          INTEGER NOT NULL CHECK (max_amount >= min_amount),
    bonus               INTEGER,
    bonus_in_percentage TEXT,     -- Carat's string, scale unknown: kept as received
    payment_amount      INTEGER,
    bonus_category      TEXT,
    expiry_days         INTEGER,  -- Carat's expiry_date (inferred: days)
    bonus_expiry_days   INTEGER,  -- Carat's bonus_expiry_date (inferred: days)
    message             TEXT,
    PRIMARY KEY (category_id, position)
) STRICT;

-- A fixed value (inferred shape: the range's fields with `amount`).
CREATE TABLE fixed_amount (
    category_id         INTEGER NOT NULL REFERENCES category (id) ON DELETE CASCADE,
    position            INTEGER NOT NULL,
    amount_key          TEXT NOT NULL,
    amount              INTEGER NOT NULL CHECK (amount >= 0),
    bonus               INTEGER,
    bonus_in_percentage TEXT,
    payment_amount      INTEGER,
    bonus_category      TEXT,
    expiry_days         INTEGER,
    bonus_expiry_days   INTEGER,
    message             TEXT,
    PRIMARY KEY (category_id, position)
) STRICT;

-- One row per sync attempt of one recharge type. outcome: running (still
-- going, or the process died: see `interrupted`), unchanged, updated, failed,
-- interrupted.
CREATE TABLE sync_run (
    id            INTEGER PRIMARY KEY,
    recharge_type TEXT NOT NULL,
    trigger       TEXT NOT NULL,   -- startup, schedule, manual, reload, cli, retry
    forced        INTEGER NOT NULL DEFAULT 0,
    started_at    TEXT NOT NULL,
    finished_at   TEXT,
    outcome       TEXT NOT NULL CHECK (outcome IN ('running', 'unchanged', 'updated', 'failed', 'interrupted')),
    previous_hash TEXT,
    new_hash      TEXT,
    requests      INTEGER NOT NULL DEFAULT 0,
    restarts      INTEGER NOT NULL DEFAULT 0,   -- fresh starts after a mid-sync hash change
    nit_renewals  INTEGER NOT NULL DEFAULT 0,   -- fresh sessions after an expired/invalid NIT
    duration_ms   INTEGER,
    error_kind    TEXT,
    error         TEXT
) STRICT;
CREATE INDEX sync_run_by_type ON sync_run (recharge_type, id);

-- Small persistent counters (the session sequence behind order_id and
-- merchant_usn).
CREATE TABLE counter (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;

-- A pause Carat asked for (Retry-After), kept across restarts.
CREATE TABLE cooldown (
    scope  TEXT PRIMARY KEY,
    until  TEXT NOT NULL,
    reason TEXT NOT NULL
) STRICT;
