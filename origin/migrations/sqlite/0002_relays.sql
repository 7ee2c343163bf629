-- Site peers allowed to relay devices' signed requests (`ota-origin peer enroll`), by their
-- Ed25519 node public key. A revoked relay stays listed, with when it was revoked.
CREATE TABLE relays (
    public_key  TEXT    PRIMARY KEY CHECK (length(public_key) = 64),
    name        TEXT    NOT NULL,
    enrolled_at BIGINT  NOT NULL,
    revoked_at  BIGINT
);
