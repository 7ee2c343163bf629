-- Private content (`release create --private SLOT`, docs/PROTOCOL.md "Private content"): which
-- artifacts are private, and, per release, which of its blobs only private artifacts use. A
-- blob is private when every release that uses it says so: a blob that any public artifact
-- uses is public (its bytes are public already). Chunk indexes are never private (ids and
-- lengths only, named by the public metadata).
ALTER TABLE artifacts ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE release_blobs ADD COLUMN private BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX release_blobs_private ON release_blobs (blob) WHERE private;
