-- Keep in step with ../sqlite/0004_generation.sql (the same SQL).
--
-- A counter of changes to the releases: every write that creates a release or changes its
-- stage adds one, in the same transaction. A serving origin keeps the releases in memory and
-- reads this counter in the one statement that uses a check-in's nonce: when it has moved, the
-- check-in reads the releases again before it decides (so a halt stops offers at once, even
-- when another process made it).
CREATE TABLE catalog_generation (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    generation BIGINT NOT NULL CHECK (generation >= 0)
);
INSERT INTO catalog_generation (id, generation) VALUES (1, 0);
