//! Chunking parameters and the FastCDC 2020 cutter.

use fastcdc::v2020;
use serde::{Deserialize, Serialize};

/// The algorithm name in `custom.enigm.chunking.algorithm`: FastCDC 2020 as implemented by the
/// `fastcdc` crate's `v2020` module, normalization level 1, the standard gear table (seed 0).
pub const ALGORITHM_FASTCDC_2020: &str = "fastcdc-2020";

/// The longest chunk any parameters may ask for: 1 MiB. It bounds what a device buffers per
/// chunk and what a peer may send as one.
pub const MAX_CHUNK_LEN: u32 = 1 << 20;

/// How an artifact is cut into chunks: FastCDC 2020 with these minimum, average and maximum
/// chunk lengths.
///
/// Only valid parameters can be built: `64 <= min <= avg <= max <= MAX_CHUNK_LEN`,
/// `avg >= 256`, `max >= 1024` (FastCDC 2020's own floors), and `min` even. (FastCDC 2020
/// examines bytes in pairs from `min` rounded down to even, so an odd `min` would cut chunks
/// one byte shorter than `min`.)
///
/// In JSON: `{"algorithm":"fastcdc-2020","min":16384,"avg":65536,"max":262144}`. Any other
/// algorithm name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "ParamsJson", into = "ParamsJson")]
pub struct ChunkingParams {
    min: u32,
    avg: u32,
    max: u32,
}

/// Chunking parameters were refused. Whoever wrote them (the operator, the signed metadata or
/// the index) is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The algorithm is not `fastcdc-2020`.
    #[error("unsupported chunking algorithm {found:?}; only \"fastcdc-2020\" is defined")]
    UnsupportedAlgorithm {
        /// The algorithm name given, cut to 80 characters.
        found: String,
    },
    /// One parameter is outside what FastCDC 2020 and [`MAX_CHUNK_LEN`] allow.
    #[error("chunking parameter {name} = {value} is outside {lowest}..={highest}")]
    OutOfRange {
        /// `"min"`, `"avg"` or `"max"`.
        name: &'static str,
        /// The value given.
        value: u32,
        /// The smallest value allowed.
        lowest: u32,
        /// The largest value allowed.
        highest: u32,
    },
    /// The parameters are not ordered `min <= avg <= max`.
    #[error("chunking parameters must satisfy min <= avg <= max, got {min}/{avg}/{max}")]
    Unordered {
        /// The minimum chunk length given.
        min: u32,
        /// The average chunk length given.
        avg: u32,
        /// The maximum chunk length given.
        max: u32,
    },
    /// The minimum is odd.
    #[error("minimum chunk length {min} is odd; fastcdc-2020 needs an even minimum")]
    OddMin {
        /// The minimum chunk length given.
        min: u32,
    },
}

impl ChunkingParams {
    /// The default: 16 KiB minimum, 64 KiB average, 256 KiB maximum.
    pub const DEFAULT: Self = Self {
        min: 16 * 1024,
        avg: 64 * 1024,
        max: 256 * 1024,
    };

    /// Check and build parameters.
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self, ParamsError> {
        let range = |name, value, lowest, highest| {
            if (lowest..=highest).contains(&value) {
                Ok(())
            } else {
                Err(ParamsError::OutOfRange {
                    name,
                    value,
                    lowest,
                    highest,
                })
            }
        };
        range("min", min, v2020::MINIMUM_MIN, MAX_CHUNK_LEN)?;
        range("avg", avg, v2020::AVERAGE_MIN, MAX_CHUNK_LEN)?;
        range("max", max, v2020::MAXIMUM_MIN, MAX_CHUNK_LEN)?;
        if !(min <= avg && avg <= max) {
            return Err(ParamsError::Unordered { min, avg, max });
        }
        if !min.is_multiple_of(2) {
            return Err(ParamsError::OddMin { min });
        }
        Ok(Self { min, avg, max })
    }

    /// The minimum chunk length; only the last chunk of an artifact may be shorter.
    pub fn min(&self) -> u32 {
        self.min
    }

    /// The average chunk length FastCDC aims for.
    pub fn avg(&self) -> u32 {
        self.avg
    }

    /// The maximum chunk length.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Default for ChunkingParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// FastCDC 2020 with fixed parameters: finds the next cut point.
#[derive(Debug, Clone)]
pub(crate) struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    mask_s: u64,
    mask_l: u64,
}

impl Cutter {
    pub(crate) fn new(params: ChunkingParams) -> Self {
        // Exactly what `v2020::FastCDC::new` (normalization level 1) derives. `avg` is in
        // 256..=1 MiB, so `bits` is in 8..=20 and both indexes are inside MASKS (26 entries).
        let bits = v2020::logarithm2(params.avg) as usize;
        Self {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            mask_s: v2020::MASKS[bits + 1],
            mask_l: v2020::MASKS[bits - 1],
        }
    }

    /// The maximum chunk length: the look-ahead needed to cut exactly as over the whole
    /// artifact.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// The length of the chunk that starts at `data[0]`. `data` must hold at least `max`
    /// bytes, or everything that is left of the artifact; the answer is then the one FastCDC
    /// 2020 gives over the whole artifact. Never 0 for non-empty `data`.
    pub(crate) fn next_len(&self, data: &[u8]) -> usize {
        let (_hash, len) = v2020::cut(
            data,
            self.min,
            self.avg,
            self.max,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        // `cut` returns at least `min / 2 * 2 >= 64`, or all of `data` when it is that short.
        debug_assert!(len > 0 || data.is_empty());
        len.max(1).min(data.len())
    }
}

/// The JSON form of [`ChunkingParams`].
#[derive(Serialize, Deserialize)]
struct ParamsJson {
    algorithm: String,
    min: u32,
    avg: u32,
    max: u32,
}

impl TryFrom<ParamsJson> for ChunkingParams {
    type Error = ParamsError;

    fn try_from(json: ParamsJson) -> Result<Self, Self::Error> {
        if json.algorithm != ALGORITHM_FASTCDC_2020 {
            return Err(ParamsError::UnsupportedAlgorithm {
                found: json.algorithm.chars().take(80).collect(),
            });
        }
        Self::new(json.min, json.avg, json.max)
    }
}

impl From<ChunkingParams> for ParamsJson {
    fn from(params: ChunkingParams) -> Self {
        Self {
            algorithm: ALGORITHM_FASTCDC_2020.to_owned(),
            min: params.min,
            avg: params.avg,
            max: params.max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_json_is_the_documented_one() {
        let json = serde_json::to_string(&ChunkingParams::DEFAULT).unwrap();
        assert_eq!(
            json,
            r#"{"algorithm":"fastcdc-2020","min":16384,"avg":65536,"max":262144}"#
        );
        let back: ChunkingParams = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ChunkingParams::DEFAULT);
        assert_eq!(
            ChunkingParams::new(16384, 65536, 262144),
            Ok(ChunkingParams::DEFAULT)
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        for name in ["fastcdc-2016", "FASTCDC-2020", "", "fastcdc-2020 "] {
            let json = format!(r#"{{"algorithm":"{name}","min":16384,"avg":65536,"max":262144}}"#);
            let err = serde_json::from_str::<ChunkingParams>(&json).unwrap_err();
            assert!(
                err.to_string().contains("unsupported chunking algorithm"),
                "{err}"
            );
        }
        let missing = r#"{"min":16384,"avg":65536,"max":262144}"#;
        assert!(serde_json::from_str::<ChunkingParams>(missing).is_err());
    }

    #[test]
    fn bounds() {
        use ParamsError::*;
        let out = |name, value, lowest, highest| {
            Err(OutOfRange {
                name,
                value,
                lowest,
                highest,
            })
        };
        assert_eq!(
            ChunkingParams::new(62, 256, 1024),
            out("min", 62, 64, MAX_CHUNK_LEN)
        );
        assert_eq!(
            ChunkingParams::new(64, 254, 1024),
            out("avg", 254, 256, MAX_CHUNK_LEN)
        );
        assert_eq!(
            ChunkingParams::new(64, 256, 1022),
            out("max", 1022, 1024, MAX_CHUNK_LEN)
        );
        assert_eq!(
            ChunkingParams::new(64, 256, MAX_CHUNK_LEN + 2),
            out("max", MAX_CHUNK_LEN + 2, 1024, MAX_CHUNK_LEN)
        );
        assert_eq!(
            ChunkingParams::new(2048, 1024, 4096),
            Err(Unordered {
                min: 2048,
                avg: 1024,
                max: 4096
            })
        );
        assert_eq!(
            ChunkingParams::new(64, 4096, 2048),
            Err(Unordered {
                min: 64,
                avg: 4096,
                max: 2048
            })
        );
        assert_eq!(ChunkingParams::new(65, 256, 1024), Err(OddMin { min: 65 }));
        assert!(ChunkingParams::new(64, 256, 1024).is_ok());
        assert!(ChunkingParams::new(MAX_CHUNK_LEN, MAX_CHUNK_LEN, MAX_CHUNK_LEN).is_ok());
        let json = r#"{"algorithm":"fastcdc-2020","min":16384,"avg":65536,"max":2097152}"#;
        let err = serde_json::from_str::<ChunkingParams>(json).unwrap_err();
        assert!(err.to_string().contains("max = 2097152"), "{err}");
    }
}
