//! Chunk index parsing: any bytes end in a typed error or an index whose entries add up to its
//! declared length, never a panic or an allocation beyond the input's size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_core::chunk::{ChunkIndex, IndexLimits};

fuzz_target!(|data: &[u8]| {
    let Ok(index) = ChunkIndex::parse(data, IndexLimits::UNBOUNDED) else {
        return;
    };
    let sum: u64 = index.entries().iter().map(|e| u64::from(e.len())).sum();
    assert_eq!(sum, index.total_length());
    assert_eq!(index.encode(), data, "parse and encode are inverse");
    let _ = index.tree_root();
});
