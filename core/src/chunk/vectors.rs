//! The chunk-tree test vectors in `core/testdata/chunk-tree/` (see the README there).
//!
//! - `positive/*.json`: per parameter set and input generator, the artifacts of the
//!   [`interesting_sizes`] boundary table, each with its expected index, chunk lengths,
//!   `custom.enigm` fields and SHA-256. The artifacts themselves are not stored: they are made
//!   again from the generator's seed and size.
//! - `negative/*.json`: a bad index or target, and the exact error expected from
//!   [`ChunkIndex::parse`], from [`ChunkVerifier::new`] with the genuine signed target, and from
//!   [`ChunkVerifier::new`] with a target that signs the bad blob itself (which reaches the
//!   checks behind the blob hash).
//! - `worked-example.json`: the three-chunk example of `docs/FORMATS.md`.
//!
//! `cargo test -p ota-core --lib chunk::vectors::regenerate -- --ignored` rewrites the files
//! from the current code; review the diff before committing it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::testutil::{chunk_ranges, feed, pseudo_random, reference_lengths};
use super::{
    ArtifactChunks, ChunkIndex, ChunkTree, ChunkVerifier, ChunkingParams, INDEX_ENTRY_LEN,
    INDEX_HEADER_LEN, IndexLimits, Ingest, Ingested,
};
use crate::digest::{Blake3Hash, ChunkId, Sha256Hash};
use crate::tuf::VerifiedArtifact;

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/chunk-tree"))
}

/// The parameter sets the vectors use: the default, and a small one that makes many chunks
/// (and deep trees) from little data.
fn param_sets() -> [(&'static str, ChunkingParams, u64); 2] {
    [
        ("default", ChunkingParams::DEFAULT, 1),
        ("small", small(), 2),
    ]
}

fn small() -> ChunkingParams {
    ChunkingParams::new(64, 256, 1024).expect("valid")
}

/// The boundary table: sizes around the chunking bounds of `params`.
fn interesting_sizes(params: ChunkingParams) -> Vec<(&'static str, usize)> {
    let (min, avg, max) = (
        params.min() as usize,
        params.avg() as usize,
        params.max() as usize,
    );
    vec![
        ("empty", 0),
        ("one byte", 1),
        ("min-1", min - 1),
        ("min", min),
        ("min+1", min + 1),
        ("avg-1", avg - 1),
        ("avg", avg),
        ("avg+1", avg + 1),
        ("max-1", max - 1),
        ("max", max),
        ("max+1", max + 1),
        ("2max-1", 2 * max - 1),
        ("2max", 2 * max),
        ("2max+1", 2 * max + 1),
        ("3max+min", 3 * max + min),
        ("16max+1", 16 * max + 1),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Generator {
    /// [`pseudo_random`] with the file's seed.
    Xof,
    /// All zero bytes (FastCDC finds no cut point, so chunks are `max` long).
    Zeros,
}

impl Generator {
    fn bytes(self, seed: u64, size: usize) -> Vec<u8> {
        match self {
            Self::Xof => pseudo_random(seed, size),
            Self::Zeros => vec![0; size],
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct PositiveFile {
    description: String,
    generator: Generator,
    seed: u64,
    chunking: ChunkingParams,
    cases: Vec<PositiveCase>,
}

#[derive(Debug, Serialize, Deserialize)]
struct PositiveCase {
    label: String,
    size: u64,
    sha256: Sha256Hash,
    enigm: ArtifactChunks,
    chunk_lengths: Vec<u32>,
    index: String,
}

/// The fields of a signed artifact target that the chunk code reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Target {
    length: u64,
    sha256: Sha256Hash,
    enigm: ArtifactChunks,
}

#[derive(Debug, Serialize, Deserialize)]
struct NegativeCase {
    description: String,
    base: String,
    target: Target,
    index: String,
    expected: Expected,
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Expected {
    /// `ChunkIndex::parse(index, IndexLimits::for_artifact(target))`: "Ok" or the error.
    parse: String,
    /// `ChunkVerifier::new(target, index)`.
    verifier: String,
    /// `ChunkVerifier::new` with `chunk_index` and `chunk_index_length` naming this blob.
    verifier_if_signed: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkedExample {
    description: String,
    generator: Generator,
    seed: u64,
    size: u64,
    chunking: ChunkingParams,
    chunks: Vec<WorkedChunk>,
    node_0_1: Blake3Hash,
    promoted: Blake3Hash,
    root: Blake3Hash,
    index: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WorkedChunk {
    offset: u64,
    len: u32,
    id: ChunkId,
    leaf: Blake3Hash,
}

impl Target {
    fn of(out: &Ingested) -> Self {
        Self {
            length: out.length,
            sha256: out.sha256,
            enigm: out.chunks.clone(),
        }
    }

    fn verified(&self) -> VerifiedArtifact {
        crate::tuf::testkit::assume_verified(
            "artifacts/vector.img",
            self.length,
            self.sha256,
            self.enigm.clone(),
        )
    }

    /// The same target, signing `index` as its chunk index.
    fn signing(&self, index: &[u8]) -> Self {
        let mut target = self.clone();
        target.enigm.chunk_index = ChunkId::of(index);
        target.enigm.chunk_index_length = index.len() as u64;
        target
    }
}

fn outcome<T, E: std::fmt::Debug>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "Ok".to_owned(),
        Err(err) => format!("{err:?}"),
    }
}

fn expected_for(target: &Target, index: &[u8]) -> Expected {
    Expected {
        parse: outcome(ChunkIndex::parse(
            index,
            IndexLimits::for_artifact(&target.verified()),
        )),
        verifier: outcome(ChunkVerifier::new(&target.verified(), index)),
        verifier_if_signed: outcome(ChunkVerifier::new(&target.signing(index).verified(), index)),
    }
}

/// Ingest in varied pieces, on one thread and on two: the output must not depend on it.
fn ingest_every_way(params: ChunkingParams, data: &[u8]) -> Ingested {
    let one_shot = feed(Ingest::new(params), data, &[data.len().max(1)], |_| {});
    for pieces in [&[1usize, 4095, 70_001][..], &[262_143, 262_145], &[1 << 20]] {
        let out = feed(Ingest::new(params), data, pieces, |_| {});
        assert_eq!(out, one_shot, "pieces {pieces:?}");
    }
    let parallel = feed(
        Ingest::with_parallel_from(params, 8192),
        data,
        &[100_000, 3],
        |_| {},
    );
    assert_eq!(parallel, one_shot, "parallel");
    one_shot
}

fn positive_files() -> Vec<(String, PositiveFile)> {
    let mut files = Vec::new();
    for (set, params, seed) in param_sets() {
        for generator in [Generator::Xof, Generator::Zeros] {
            let name = format!("{set}-{}.json", serde_plain(generator));
            let cases = interesting_sizes(params)
                .into_iter()
                .map(|(label, size)| {
                    let data = generator.bytes(seed, size);
                    let out = feed(Ingest::new(params), &data, &[size.max(1)], |_| {});
                    PositiveCase {
                        label: label.to_owned(),
                        size: size as u64,
                        sha256: out.sha256,
                        enigm: out.chunks.clone(),
                        chunk_lengths: reference_lengths(params, &data)
                            .into_iter()
                            .map(|len| len as u32)
                            .collect(),
                        index: hex::encode(&out.index),
                    }
                })
                .collect();
            let description = format!(
                "Artifacts of the boundary table for the {set} parameters, bytes from the \
                 {} generator",
                serde_plain(generator)
            );
            files.push((
                name,
                PositiveFile {
                    description,
                    generator,
                    seed,
                    chunking: params,
                    cases,
                },
            ));
        }
    }
    files
}

fn serde_plain(generator: Generator) -> &'static str {
    match generator {
        Generator::Xof => "xof",
        Generator::Zeros => "zeros",
    }
}

/// Rewrite the length (u32 LE) of entry `i`.
fn set_len(index: &mut [u8], i: usize, len: u32) {
    let at = INDEX_HEADER_LEN + INDEX_ENTRY_LEN * i + 32;
    index[at..at + 4].copy_from_slice(&len.to_le_bytes());
}

fn len_of(index: &[u8], i: usize) -> u32 {
    let at = INDEX_HEADER_LEN + INDEX_ENTRY_LEN * i + 32;
    u32::from_le_bytes([index[at], index[at + 1], index[at + 2], index[at + 3]])
}

fn entry_range(i: usize) -> std::ops::Range<usize> {
    let start = INDEX_HEADER_LEN + INDEX_ENTRY_LEN * i;
    start..start + INDEX_ENTRY_LEN
}

/// The negative cases: name, description, and how to make the bad index or target from the
/// good ones.
type Mutation = fn(&mut Vec<u8>, &mut Target);

fn negative_mutations() -> Vec<(&'static str, &'static str, Mutation)> {
    vec![
        (
            "tampered-entry-id",
            "one bit of chunk 1's id flipped",
            |index, _| index[entry_range(1).start] ^= 0x01,
        ),
        (
            "tampered-entry-lengths",
            "chunk 0 one byte shorter, chunk 1 one byte longer (same total)",
            |index, _| {
                let (a, b) = (len_of(index, 0), len_of(index, 1));
                set_len(index, 0, a - 1);
                set_len(index, 1, b + 1);
            },
        ),
        (
            "reordered-entries",
            "entries 0 and 1 swapped",
            |index, _| {
                let first = index[entry_range(0)].to_vec();
                let second = index[entry_range(1)].to_vec();
                index[entry_range(0)].copy_from_slice(&second);
                index[entry_range(1)].copy_from_slice(&first);
            },
        ),
        (
            "truncated-mid-entry",
            "the last 5 bytes cut off",
            |index, _| index.truncate(index.len() - 5),
        ),
        (
            "truncated-whole-entry",
            "the last entry cut off, the header unchanged",
            |index, _| index.truncate(index.len() - INDEX_ENTRY_LEN),
        ),
        ("truncated-header", "only the first 20 bytes", |index, _| {
            index.truncate(20)
        }),
        ("trailing-byte", "one zero byte appended", |index, _| {
            index.push(0)
        }),
        ("bad-magic", "magic ENGMCIDY", |index, _| index[7] = b'Y'),
        ("unsupported-version", "format version 2", |index, _| {
            index[8] = 2
        }),
        ("unsupported-algorithm", "algorithm number 2", |index, _| {
            index[10] = 2
        }),
        ("odd-min", "min 16385 in the header", |index, _| {
            index[12..16].copy_from_slice(&16385u32.to_le_bytes())
        }),
        (
            "other-params",
            "min 8192 in the header: valid, but not the signed parameters",
            |index, _| index[12..16].copy_from_slice(&8192u32.to_le_bytes()),
        ),
        (
            "extra-entry",
            "entry 0 repeated in front, count and total raised to match",
            |index, _| {
                let first = index[entry_range(0)].to_vec();
                let count = u64::from_le_bytes(index[24..32].try_into().unwrap());
                let total = u64::from_le_bytes(index[32..40].try_into().unwrap());
                let len = u64::from(len_of(index, 0));
                index[24..32].copy_from_slice(&(count + 1).to_le_bytes());
                index[32..40].copy_from_slice(&(total + len).to_le_bytes());
                let at = entry_range(0).start;
                index.splice(at..at, first);
            },
        ),
        ("chunk-too-long", "chunk 0 raised to max+1", |index, _| {
            set_len(index, 0, 262_145)
        }),
        ("empty-chunk", "chunk 1 of length 0", |index, _| {
            set_len(index, 1, 0)
        }),
        (
            "total-one-short",
            "the header's total length one less than the chunks' sum",
            |index, _| {
                let total = u64::from_le_bytes(index[32..40].try_into().unwrap());
                index[32..40].copy_from_slice(&(total - 1).to_le_bytes());
            },
        ),
        (
            "total-one-over",
            "the header's total length one more than the chunks' sum",
            |index, _| {
                let total = u64::from_le_bytes(index[32..40].try_into().unwrap());
                index[32..40].copy_from_slice(&(total + 1).to_le_bytes());
            },
        ),
        (
            "no-entries",
            "a header-only index (count 0, total 0) for a non-empty artifact",
            |index, _| {
                index.truncate(INDEX_HEADER_LEN);
                index[24..40].fill(0);
            },
        ),
        (
            "wrong-signed-root",
            "the index is genuine, the target signs another chunk_tree",
            |_, target| target.enigm.chunk_tree.0[0] ^= 0x01,
        ),
    ]
}

/// The base of the negative cases: the default parameters, `2max+1` bytes from the generator.
fn negative_base() -> (String, Target, Vec<u8>) {
    let (_, params, seed) = param_sets()[0];
    let size = 2 * params.max() as usize + 1;
    let data = pseudo_random(seed, size);
    let out = feed(Ingest::new(params), &data, &[size], |_| {});
    (
        "positive/default-xof.json, case 2max+1".to_owned(),
        Target::of(&out),
        out.index,
    )
}

fn negative_cases() -> Vec<(String, NegativeCase)> {
    let (base, good_target, good_index) = negative_base();
    negative_mutations()
        .into_iter()
        .map(|(name, description, mutate)| {
            let mut index = good_index.clone();
            let mut target = good_target.clone();
            mutate(&mut index, &mut target);
            let expected = expected_for(&target, &index);
            let case = NegativeCase {
                description: description.to_owned(),
                base: base.clone(),
                target,
                index: hex::encode(&index),
                expected,
            };
            (format!("{name}.json"), case)
        })
        .collect()
}

fn worked_example() -> WorkedExample {
    let params = small();
    let size = 1500;
    let (seed, out) = (0u64..)
        .map(|seed| {
            let data = pseudo_random(seed, size);
            (seed, feed(Ingest::new(params), &data, &[size], |_| {}))
        })
        .find(|(_, out)| out.chunks.chunks == 3)
        .expect("some seed gives three chunks");
    let index = ChunkIndex::parse(&out.index, IndexLimits::UNBOUNDED).expect("own index");
    let chunks: Vec<WorkedChunk> = index
        .entries()
        .iter()
        .map(|e| WorkedChunk {
            offset: e.offset(),
            len: e.len(),
            id: *e.id(),
            leaf: ChunkTree::leaf(e.id(), e.len()),
        })
        .collect();
    let node_0_1 = ChunkTree::node(&chunks[0].leaf, &chunks[1].leaf);
    let promoted = chunks[2].leaf;
    WorkedExample {
        description: "Three chunks: leaves 0 and 1 make a node, leaf 2 is promoted, \
                      root = node(node_0_1, leaf 2)"
            .to_owned(),
        generator: Generator::Xof,
        seed,
        size: size as u64,
        chunking: params,
        chunks,
        node_0_1,
        promoted,
        root: ChunkTree::node(&node_0_1, &promoted),
        index: hex::encode(&out.index),
    }
}

fn read<T: serde::de::DeserializeOwned>(relative: &str) -> T {
    let path = dir().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (regenerate with --ignored)", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write<T: Serialize>(relative: &str, value: &T) {
    let path = dir().join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let mut text = serde_json::to_string_pretty(value).unwrap();
    text.push('\n');
    std::fs::write(&path, text).unwrap();
}

fn json_names(relative: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir().join(relative))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect()
}

#[test]
#[ignore = "writes core/testdata/chunk-tree; run with --ignored to regenerate"]
fn regenerate() {
    for (name, file) in positive_files() {
        write(&format!("positive/{name}"), &file);
    }
    for (name, case) in negative_cases() {
        write(&format!("negative/{name}"), &case);
    }
    write("worked-example.json", &worked_example());
}

#[test]
fn positive_vectors() {
    let expected_files = positive_files();
    let names: BTreeSet<String> = expected_files.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(json_names("positive"), names, "files in positive/");

    for (name, _) in expected_files {
        let file: PositiveFile = read(&format!("positive/{name}"));
        let params = file.chunking;
        let sizes = interesting_sizes(params);
        assert_eq!(
            file.cases.len(),
            sizes.len(),
            "{name}: one case per boundary size"
        );
        for (case, (label, size)) in file.cases.iter().zip(sizes) {
            let ctx = format!("{name} {label}");
            assert_eq!(
                (case.label.as_str(), case.size),
                (label, size as u64),
                "{ctx}"
            );
            let data = file.generator.bytes(file.seed, size);

            // The ingest reproduces the stored index and fields, however it is fed.
            let out = ingest_every_way(params, &data);
            assert_eq!(hex::encode(&out.index), case.index, "{ctx}: index");
            assert_eq!(out.chunks, case.enigm, "{ctx}: custom.enigm");
            assert_eq!(out.sha256, case.sha256, "{ctx}: sha256");
            assert_eq!(out.length, case.size, "{ctx}: length");

            // The boundaries are FastCDC 2020's over the whole artifact.
            let reference: Vec<u32> = reference_lengths(params, &data)
                .into_iter()
                .map(|len| len as u32)
                .collect();
            assert_eq!(reference, case.chunk_lengths, "{ctx}: fastcdc lengths");

            // The stored index parses to those lengths and the stored root.
            let bytes = hex::decode(&case.index).unwrap();
            let target = Target {
                length: case.size,
                sha256: case.sha256,
                enigm: case.enigm.clone(),
            };
            let index =
                ChunkIndex::parse(&bytes, IndexLimits::for_artifact(&target.verified())).unwrap();
            let lengths: Vec<u32> = index.entries().iter().map(|e| e.len()).collect();
            assert_eq!(lengths, case.chunk_lengths, "{ctx}: index lengths");
            assert_eq!(index.tree_root(), case.enigm.chunk_tree, "{ctx}: root");
            assert_eq!(index.encode(), bytes, "{ctx}: re-encoding");

            // A device accepts it and every chunk of the artifact.
            let verifier = ChunkVerifier::new(&target.verified(), &bytes).unwrap();
            let mut check = verifier.artifact_check();
            for (position, range) in chunk_ranges(verifier.index()).enumerate() {
                let chunk = verifier.verify(position as u64, &data[range]).unwrap();
                check.push(&chunk).unwrap();
            }
            check.finish().unwrap();
        }
    }
}

#[test]
fn boundary_table_shapes() {
    // The cases at the bounds cut where the bounds say, whatever the data.
    let file: PositiveFile = read("positive/default-zeros.json");
    let lengths = |label: &str| {
        file.cases
            .iter()
            .find(|c| c.label == label)
            .map(|c| c.chunk_lengths.clone())
            .unwrap()
    };
    let max = ChunkingParams::DEFAULT.max();
    assert_eq!(lengths("empty"), Vec::<u32>::new());
    assert_eq!(lengths("one byte"), [1]);
    assert_eq!(lengths("min-1"), [16383]);
    assert_eq!(lengths("max"), [max]);
    assert_eq!(lengths("max+1"), [max, 1]);
    assert_eq!(lengths("2max"), [max, max]);
    assert_eq!(lengths("2max+1"), [max, max, 1]);
    let empty = &file.cases[0];
    assert_eq!(empty.enigm.chunks, 0);
    assert_eq!(empty.enigm.chunk_tree, ChunkTree::empty_root());
    assert_eq!(
        empty.enigm.chunk_tree.to_hex(),
        blake3::hash(&[0x02]).to_hex().as_str()
    );
    assert_eq!(empty.enigm.chunk_index_length, INDEX_HEADER_LEN as u64);
}

#[test]
fn negative_vectors() {
    let expected_cases = negative_cases();
    let names: BTreeSet<String> = expected_cases.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(json_names("negative"), names, "files in negative/");
    for (name, _) in &expected_cases {
        let case: NegativeCase = read(&format!("negative/{name}"));
        let index = hex::decode(&case.index).unwrap();
        let actual = expected_for(&case.target, &index);
        assert_eq!(actual, case.expected, "negative/{name}");
        assert_ne!(
            case.expected.verifier, "Ok",
            "negative/{name}: a device must refuse it"
        );
        if case.expected.verifier_if_signed == "Ok" {
            panic!("negative/{name}: must fail even when the blob is the signed one");
        }
    }
}

#[test]
fn negative_vectors_assert_the_intended_errors() {
    // The files hold Debug strings; this pins the variant each case is about, so a
    // regeneration cannot silently turn a case into a test of something else.
    let expect = |name: &str, field: fn(&Expected) -> &String, prefix: &str| {
        let case: NegativeCase = read(&format!("negative/{name}.json"));
        let got = field(&case.expected);
        assert!(
            got.starts_with(prefix),
            "negative/{name}.json: expected {prefix}…, got {got}"
        );
    };
    fn parse(e: &Expected) -> &String {
        &e.parse
    }
    fn verifier(e: &Expected) -> &String {
        &e.verifier
    }
    fn signed(e: &Expected) -> &String {
        &e.verifier_if_signed
    }
    expect("tampered-entry-id", verifier, "BlobHashMismatch");
    expect("tampered-entry-id", signed, "TreeRootMismatch");
    expect("tampered-entry-lengths", signed, "TreeRootMismatch");
    expect("reordered-entries", parse, "Ok");
    expect("reordered-entries", verifier, "BlobHashMismatch");
    expect("reordered-entries", signed, "TreeRootMismatch");
    expect("truncated-mid-entry", parse, "Truncated");
    expect("truncated-mid-entry", verifier, "BlobLengthMismatch");
    expect(
        "truncated-mid-entry",
        signed,
        "SignedIndexMalformed { source: Truncated",
    );
    expect("truncated-whole-entry", parse, "Truncated");
    expect(
        "truncated-header",
        parse,
        "Truncated { expected: 40, found: 20 }",
    );
    expect("trailing-byte", parse, "TrailingBytes");
    expect("bad-magic", parse, "BadMagic");
    expect(
        "unsupported-version",
        parse,
        "UnsupportedVersion { found: 2 }",
    );
    expect(
        "unsupported-algorithm",
        parse,
        "UnsupportedAlgorithm { found: 2 }",
    );
    expect(
        "odd-min",
        parse,
        "InvalidParams { source: OddMin { min: 16385 } }",
    );
    expect("other-params", parse, "Ok");
    expect("other-params", signed, "ParamsMismatch");
    expect("extra-entry", parse, "TooManyChunks");
    expect("extra-entry", signed, "CountMismatch");
    expect(
        "chunk-too-long",
        parse,
        "ChunkTooLong { position: 0, len: 262145, max: 262144 }",
    );
    expect("empty-chunk", parse, "EmptyChunk { position: 1 }");
    expect("total-one-short", parse, "ChunksExceedLength");
    expect("total-one-over", parse, "LengthOverLimit");
    expect(
        "total-one-over",
        signed,
        "SignedIndexMalformed { source: LengthMismatch",
    );
    expect("no-entries", parse, "Ok");
    expect("no-entries", signed, "CountMismatch");
    expect("wrong-signed-root", parse, "Ok");
    expect("wrong-signed-root", verifier, "TreeRootMismatch");
}

#[test]
fn worked_example_vector() {
    let stored: WorkedExample = read("worked-example.json");
    let data = pseudo_random(stored.seed, stored.size as usize);
    let out = feed(Ingest::new(stored.chunking), &data, &[data.len()], |_| {});
    assert_eq!(hex::encode(&out.index), stored.index);
    assert_eq!(out.chunks.chunk_tree, stored.root);
    assert_eq!(stored.chunks.len(), 3);
    let mut offset = 0;
    for chunk in &stored.chunks {
        assert_eq!(chunk.offset, offset);
        let bytes = &data[offset as usize..(offset + u64::from(chunk.len)) as usize];
        assert_eq!(ChunkId::of(bytes), chunk.id);
        // leaf = BLAKE3(0x00 ‖ id ‖ len u32 LE), spelled out.
        let mut leaf_input = vec![0x00];
        leaf_input.extend_from_slice(chunk.id.as_bytes());
        leaf_input.extend_from_slice(&chunk.len.to_le_bytes());
        assert_eq!(Blake3Hash::of(&leaf_input), chunk.leaf);
        offset += u64::from(chunk.len);
    }
    // node = BLAKE3(0x01 ‖ left ‖ right); leaf 2 is promoted.
    let mut node_input = vec![0x01];
    node_input.extend_from_slice(stored.chunks[0].leaf.as_bytes());
    node_input.extend_from_slice(stored.chunks[1].leaf.as_bytes());
    assert_eq!(Blake3Hash::of(&node_input), stored.node_0_1);
    assert_eq!(stored.promoted, stored.chunks[2].leaf);
    let mut root_input = vec![0x01];
    root_input.extend_from_slice(stored.node_0_1.as_bytes());
    root_input.extend_from_slice(stored.promoted.as_bytes());
    assert_eq!(Blake3Hash::of(&root_input), stored.root);
}
