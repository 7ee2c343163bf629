-- The origin's catalog, SQLite flavour. Keep in step with ../postgres/0001_catalog.sql: the two
-- differ only where the SQL must (BLOB here, BYTEA there). Never edit a migration that has
-- shipped; add the next one (sqlx records a checksum of each applied migration).
--
-- Conventions: times are Unix seconds (BIGINT); digests, keys, handles and nonces are lowercase
-- hex (TEXT); lists are JSON text; release numbers are BIGINT (>= 0).

-- One row per release of a channel. `stage`, `resume_stage` and `basis_points` together are
-- ota-core's rollout::Stage: `resume_stage` (the active stage a halted release left) is set
-- exactly when the stage is 'halted', `basis_points` exactly when the stage, or the stage a
-- halted release left, is 'limited'. The health gate is ota-core's rollout::HealthPolicy.
CREATE TABLE releases (
    channel              TEXT    NOT NULL,
    number               BIGINT  NOT NULL CHECK (number >= 0),
    version              TEXT    NOT NULL,
    stage                TEXT    NOT NULL CHECK (stage IN ('draft', 'validation', 'limited',
                                                'stable', 'security', 'halted', 'revoked')),
    resume_stage         TEXT    CHECK (resume_stage IN ('validation', 'limited', 'stable',
                                                         'security')),
    basis_points         BIGINT  CHECK (basis_points BETWEEN 0 AND 10000),
    security             BOOLEAN NOT NULL,
    models               TEXT    NOT NULL,
    min_installed        BIGINT  CHECK (min_installed >= 0),
    manifest_target      TEXT    NOT NULL,
    failure_threshold_bp BIGINT  NOT NULL CHECK (failure_threshold_bp BETWEEN 0 AND 10000),
    min_sample           BIGINT  NOT NULL CHECK (min_sample >= 0),
    created_at           BIGINT  NOT NULL,
    updated_at           BIGINT  NOT NULL,
    halted_reason        TEXT,
    PRIMARY KEY (channel, number),
    CHECK ((stage = 'halted') = (resume_stage IS NOT NULL)),
    CHECK ((stage = 'limited' OR COALESCE(resume_stage, '') = 'limited')
           = (basis_points IS NOT NULL))
);

-- The artifacts of a release (installed all or nothing), as the `release` role signs them.
CREATE TABLE artifacts (
    channel     TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    target      TEXT   NOT NULL,
    slot        TEXT   NOT NULL,
    length      BIGINT NOT NULL CHECK (length >= 0),
    sha256      TEXT   NOT NULL CHECK (length(sha256) = 64),
    blake3      TEXT   NOT NULL CHECK (length(blake3) = 64),
    chunk_index TEXT   NOT NULL CHECK (length(chunk_index) = 64),
    chunk_tree  TEXT   NOT NULL CHECK (length(chunk_tree) = 64),
    chunk_count BIGINT NOT NULL CHECK (chunk_count >= 0),
    PRIMARY KEY (channel, number, target),
    FOREIGN KEY (channel, number) REFERENCES releases (channel, number) ON DELETE CASCADE
);

-- Every blob (chunk or chunk index) in the blob store, recorded once however many releases
-- share it, and which releases use it.
CREATE TABLE blobs (
    id         TEXT   PRIMARY KEY CHECK (length(id) = 64),
    length     BIGINT NOT NULL CHECK (length >= 0),
    created_at BIGINT NOT NULL
);

CREATE TABLE release_blobs (
    channel TEXT   NOT NULL,
    number  BIGINT NOT NULL,
    blob    TEXT   NOT NULL REFERENCES blobs (id),
    PRIMARY KEY (channel, number, blob),
    FOREIGN KEY (channel, number) REFERENCES releases (channel, number) ON DELETE CASCADE
);
CREATE INDEX release_blobs_by_blob ON release_blobs (blob);

-- The files the origin serves (TUF metadata such as '3.root.json' or 'timestamp.json', and
-- other published files). A file's version never goes down; one version has one content.
CREATE TABLE metadata (
    name         TEXT   PRIMARY KEY,
    role         TEXT   NOT NULL,
    version      BIGINT NOT NULL CHECK (version >= 0),
    bytes        BLOB   NOT NULL,
    published_at BIGINT NOT NULL
);
CREATE INDEX metadata_by_role ON metadata (role, version);

-- Enrolled devices: only what the director needs (DESIGN.md §3 "Device handle").
CREATE TABLE devices (
    handle              TEXT    PRIMARY KEY CHECK (length(handle) = 64),
    public_key          TEXT    NOT NULL CHECK (length(public_key) = 64),
    channel             TEXT    NOT NULL,
    model               TEXT    NOT NULL,
    enrolled_at         BIGINT  NOT NULL,
    revoked             BOOLEAN NOT NULL DEFAULT FALSE,
    revoked_at          BIGINT,
    validation_cohort   BOOLEAN NOT NULL DEFAULT FALSE,
    installed           BIGINT  CHECK (installed >= 0),
    attestation         TEXT    CHECK (attestation IN ('passed', 'failed')),
    attestation_reasons TEXT,
    attested_at         BIGINT,
    CHECK (revoked = (revoked_at IS NOT NULL)),
    CHECK ((attestation IS NULL) = (attested_at IS NULL)),
    CHECK ((attestation IS NULL) = (attestation_reasons IS NULL))
);
CREATE INDEX devices_by_channel ON devices (channel, handle);

-- Single-use request nonces, bound to the connection they were issued on (binding: hex
-- SHA-256 of that connection's TLS exporter value). A used nonce stays until it expires, so a
-- replay is refused across restarts.
CREATE TABLE nonces (
    nonce      TEXT    PRIMARY KEY CHECK (length(nonce) = 64),
    binding    TEXT    NOT NULL CHECK (length(binding) = 64),
    issued_at  BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX nonces_by_expiry ON nonces (expires_at);

-- Install reports: the latest outcome of each device for each release (a device that reports
-- twice counts once, so one device cannot tip the health gate).
CREATE TABLE reports (
    channel     TEXT   NOT NULL,
    number      BIGINT NOT NULL,
    handle      TEXT   NOT NULL REFERENCES devices (handle),
    outcome     TEXT   NOT NULL CHECK (outcome IN ('success', 'failure')),
    error_class TEXT,
    reported_at BIGINT NOT NULL,
    PRIMARY KEY (channel, number, handle),
    FOREIGN KEY (channel, number) REFERENCES releases (channel, number) ON DELETE CASCADE
);
