//! The official BLAKE3 test vectors (`core/testdata/blake3/`), run through this crate's own
//! hashing paths: [`ChunkId::of`], [`Blake3Hash::of`], the ingest's whole-artifact BLAKE3 and
//! [`ArtifactCheck`], plus the keyed and key-derivation modes of the `blake3` crate that other
//! modules build on.

use std::convert::Infallible;

use serde::Deserialize;

use super::testutil::feed;
use super::{ArtifactCheck, ArtifactChunks, BlockShare, ChunkingParams, Ingest};
use crate::digest::{Blake3Hash, ChunkId, Sha256Hash};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/blake3/test_vectors.json"
);

/// Piece sizes for incremental hashing: around BLAKE3's 64-byte block and 1024-byte chunk.
const PIECES: [&[usize]; 6] = [&[1], &[7], &[64], &[1023], &[1024, 1], &[4096, 65, 1025]];

#[derive(Deserialize)]
struct Vectors {
    key: String,
    context_string: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    input_len: usize,
    hash: String,
    keyed_hash: String,
    derive_key: String,
}

fn load() -> Vectors {
    let text = std::fs::read_to_string(VECTORS).expect("core/testdata/blake3/test_vectors.json");
    serde_json::from_str(&text).expect("test_vectors.json parses")
}

fn input(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn pieces<'a>(data: &'a [u8], sizes: &'a [usize]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut rest = data;
    let mut sizes = sizes.iter().cycle();
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let size = sizes.next().copied().unwrap_or(1).clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        Some(piece)
    })
}

fn xof(hasher: &blake3::Hasher) -> String {
    let mut out = [0u8; 131];
    hasher.finalize_xof().fill(&mut out);
    hex::encode(out)
}

fn incremental(mut hasher: blake3::Hasher, data: &[u8], sizes: &[usize]) -> blake3::Hasher {
    for piece in pieces(data, sizes) {
        hasher.update(piece);
    }
    hasher
}

#[test]
fn file_has_all_cases() {
    let vectors = load();
    assert_eq!(vectors.cases.len(), 35);
    assert_eq!(vectors.key.len(), blake3::KEY_LEN);
    for case in &vectors.cases {
        for output in [&case.hash, &case.keyed_hash, &case.derive_key] {
            assert_eq!(output.len(), 2 * 131, "case {}", case.input_len);
        }
    }
}

#[test]
fn hash_mode_through_our_paths() {
    let small = ChunkingParams::new(64, 256, 1024).unwrap();
    for case in load().cases {
        let data = input(case.input_len);
        let expected: Blake3Hash = case.hash[..64].parse().unwrap();
        let ctx = format!("input_len {}", case.input_len);

        assert_eq!(ChunkId::of(&data).0, expected.0, "ChunkId::of, {ctx}");
        assert_eq!(Blake3Hash::of(&data), expected, "Blake3Hash::of, {ctx}");
        assert_eq!(
            xof(&blake3::Hasher::new().update(&data).clone()),
            case.hash,
            "{ctx}"
        );

        for sizes in PIECES {
            let hasher = incremental(blake3::Hasher::new(), &data, sizes);
            assert_eq!(xof(&hasher), case.hash, "incremental {sizes:?}, {ctx}");

            // The ingest's whole-artifact BLAKE3, on one thread and on two.
            for ingest in [Ingest::new(small), Ingest::with_parallel_from(small, 1024)] {
                let out = feed(ingest, &data, sizes, |_| {});
                assert_eq!(out.chunks.blake3, expected, "ingest {sizes:?}, {ctx}");
                assert_eq!(out.length, case.input_len as u64);
            }

            // The device's whole-artifact check, against the official value as signed.
            let signed = crate::tuf::testkit::assume_verified(
                "artifacts/vector.img",
                case.input_len as u64,
                Sha256Hash::of(&data),
                ArtifactChunks {
                    blake3: expected,
                    ..Ingest::new(small)
                        .finish(|_| Ok::<(), Infallible>(()))
                        .unwrap()
                        .chunks
                },
            );
            let mut check = ArtifactCheck::new(&signed);
            for piece in pieces(&data, sizes) {
                check.update(piece).unwrap();
            }
            check
                .finish()
                .unwrap_or_else(|e| panic!("ArtifactCheck {sizes:?}, {ctx}: {e}"));

            // The same check split between two threads' halves by blocks of one and of two
            // BLAKE3 chunks (the vectors run to 100 chunks), joined into the official value.
            for share in [(1024, 1, 2), (2048, 2, 3)] {
                let share = BlockShare::new(share.0, share.1, share.2).unwrap();
                let (mut first, mut second) = ArtifactCheck::new(&signed).split(share);
                for piece in pieces(&data, sizes) {
                    first.update(piece).unwrap();
                    second.update(piece).unwrap();
                }
                ArtifactCheck::finish_split(first, second)
                    .unwrap_or_else(|e| panic!("split {share:?} {sizes:?}, {ctx}: {e}"));
            }
        }
    }
}

#[test]
fn keyed_hash_mode() {
    let vectors = load();
    let key: [u8; 32] = vectors.key.as_bytes().try_into().unwrap();
    for case in &vectors.cases {
        let data = input(case.input_len);
        let ctx = format!("input_len {}", case.input_len);
        assert_eq!(
            blake3::keyed_hash(&key, &data).to_hex().as_str(),
            &case.keyed_hash[..64],
            "{ctx}"
        );
        for sizes in PIECES {
            let hasher = incremental(blake3::Hasher::new_keyed(&key), &data, sizes);
            assert_eq!(
                hasher.finalize().to_hex().as_str(),
                &case.keyed_hash[..64],
                "{ctx}"
            );
            assert_eq!(
                xof(&hasher),
                case.keyed_hash,
                "incremental {sizes:?}, {ctx}"
            );
        }
    }
}

#[test]
fn derive_key_mode() {
    let vectors = load();
    for case in &vectors.cases {
        let data = input(case.input_len);
        let ctx = format!("input_len {}", case.input_len);
        assert_eq!(
            hex::encode(blake3::derive_key(&vectors.context_string, &data)),
            &case.derive_key[..64],
            "{ctx}"
        );
        for sizes in PIECES {
            let hasher = incremental(
                blake3::Hasher::new_derive_key(&vectors.context_string),
                &data,
                sizes,
            );
            assert_eq!(
                hasher.finalize().to_hex().as_str(),
                &case.derive_key[..64],
                "{ctx}"
            );
            assert_eq!(
                xof(&hasher),
                case.derive_key,
                "incremental {sizes:?}, {ctx}"
            );
        }
    }
}

#[test]
fn a_wrong_value_is_caught() {
    // The comparison above can fail: flip one hex digit of a vector and our path disagrees.
    let case = &load().cases[10];
    let data = input(case.input_len);
    let mut wrong = case.hash[..64].to_owned();
    let flipped = if wrong.starts_with('0') { "1" } else { "0" };
    wrong.replace_range(..1, flipped);
    assert_ne!(Blake3Hash::of(&data), wrong.parse::<Blake3Hash>().unwrap());
}
