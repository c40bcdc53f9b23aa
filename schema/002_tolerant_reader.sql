-- carat-catalogd store, migration 002: the tolerant reader and the begin gate.
--
-- Carat's own text of every descriptive field is kept beside the value
-- derived from it, so an answer whose text does not parse keeps the text
-- (and the derived column is NULL) instead of failing the catalog:
--   expiry_date / bonus_expiry_date   Carat's text; expiry_days /
--                                      bonus_expiry_days when it is a day
--                                      count, expiry_on / bonus_expiry_on
--                                      (ISO date) when it is a calendar date
--   bonus_text / payment_amount_text  Carat's text; bonus / payment_amount
--                                      (centavos) when it is an integer
-- Rows written by migration 001 held only the derived integers; their text
-- is rebuilt from them.

ALTER TABLE amount_range ADD COLUMN expiry_date TEXT;
ALTER TABLE amount_range ADD COLUMN bonus_expiry_date TEXT;
ALTER TABLE amount_range ADD COLUMN expiry_on TEXT;
ALTER TABLE amount_range ADD COLUMN bonus_expiry_on TEXT;
ALTER TABLE amount_range ADD COLUMN bonus_text TEXT;
ALTER TABLE amount_range ADD COLUMN payment_amount_text TEXT;
UPDATE amount_range SET
    expiry_date = CAST(expiry_days AS TEXT),
    bonus_expiry_date = CAST(bonus_expiry_days AS TEXT),
    bonus_text = CAST(bonus AS TEXT),
    payment_amount_text = CAST(payment_amount AS TEXT);

ALTER TABLE fixed_amount ADD COLUMN expiry_date TEXT;
ALTER TABLE fixed_amount ADD COLUMN bonus_expiry_date TEXT;
ALTER TABLE fixed_amount ADD COLUMN expiry_on TEXT;
ALTER TABLE fixed_amount ADD COLUMN bonus_expiry_on TEXT;
ALTER TABLE fixed_amount ADD COLUMN bonus_text TEXT;
ALTER TABLE fixed_amount ADD COLUMN payment_amount_text TEXT;
UPDATE fixed_amount SET
    expiry_date = CAST(expiry_days AS TEXT),
    bonus_expiry_date = CAST(bonus_expiry_days AS TEXT),
    bonus_text = CAST(bonus AS TEXT),
    payment_amount_text = CAST(payment_amount AS TEXT);

-- The begin call's general_hash, kept as the gate of the next check. The
-- catalog is committed under the hash its data answers carry
-- (general_hash); when Carat's begin answer carries another value, the
-- next check compares begin with begin, so an unchanged check stays one
-- request.
ALTER TABLE catalog_version ADD COLUMN gate_hash TEXT CHECK (gate_hash IS NULL OR length(gate_hash) = 16);
UPDATE catalog_version SET gate_hash = general_hash;

-- The run record: begin's hash, and what the tolerant reader could not
-- interpret (a count and the first few, clipped).
ALTER TABLE sync_run ADD COLUMN begin_hash TEXT;
ALTER TABLE sync_run ADD COLUMN warnings INTEGER NOT NULL DEFAULT 0;
ALTER TABLE sync_run ADD COLUMN warning_sample TEXT;
