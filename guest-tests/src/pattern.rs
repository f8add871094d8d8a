//! Offset-encoded test data. The 8-byte little-endian word at every
//! 8-aligned file offset `w` is `w ^ key(seed)`, so
//! - every byte depends on its file offset (misplaced data is detected),
//! - different seeds (file generations) give different data, and
//! - a misplaced aligned word can be decoded back to the offset it came from,
//!   which makes failure diagnostics precise.

/// Per-seed XOR key (splitmix64 finaliser).
pub fn key(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The expected byte at `off` for `seed`.
pub fn byte_at(seed: u64, off: u64) -> u8 {
    let w = off & !7;
    ((w ^ key(seed)) >> ((off & 7) * 8)) as u8
}

/// Fills `buf` with the pattern of file range `[file_off, file_off+len)`.
pub fn fill(buf: &mut [u8], seed: u64, file_off: u64) {
    let k = key(seed);
    let mut i = 0usize;
    // leading unaligned bytes
    while i < buf.len() && !(file_off + i as u64).is_multiple_of(8) {
        buf[i] = byte_at(seed, file_off + i as u64);
        i += 1;
    }
    // whole words
    while i + 8 <= buf.len() {
        let w = file_off + i as u64;
        buf[i..i + 8].copy_from_slice(&(w ^ k).to_le_bytes());
        i += 8;
    }
    while i < buf.len() {
        buf[i] = byte_at(seed, file_off + i as u64);
        i += 1;
    }
}

/// A new buffer holding the pattern for `[file_off, file_off+len)`.
pub fn make(seed: u64, file_off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill(&mut v, seed, file_off);
    v
}

/// Checks `actual` against the pattern of `[file_off, ..)`.
pub fn verify(actual: &[u8], seed: u64, file_off: u64) -> Result<(), String> {
    let expected = make(seed, file_off, actual.len());
    compare(actual, &expected, file_off, &[seed])
}

/// Compares `actual` with `expected`, both describing file bytes starting at
/// `file_off`. On mismatch the error names the first bad offset, how many
/// bytes differ, hex dumps, and where the wrong data seems to come from
/// (decoded with each of `seeds`).
pub fn compare(actual: &[u8], expected: &[u8], file_off: u64, seeds: &[u64]) -> Result<(), String> {
    if actual.len() != expected.len() {
        return Err(format!(
            "length mismatch at file offset {file_off}: got {} bytes, expected {}",
            actual.len(),
            expected.len()
        ));
    }
    let first = match actual.iter().zip(expected).position(|(a, e)| a != e) {
        None => return Ok(()),
        Some(i) => i,
    };
    let bad = actual.iter().zip(expected).filter(|(a, e)| a != e).count();
    let last = actual
        .iter()
        .zip(expected)
        .rposition(|(a, e)| a != e)
        .unwrap_or(first);
    let lo = first.saturating_sub(first % 8);
    let hi = (lo + 16).min(actual.len());
    let mut msg = format!(
        "data mismatch: {bad} of {} bytes differ, first at file offset {} (buffer index {first}), last at file offset {}\n  expected {}\n  actual   {}",
        actual.len(),
        file_off + first as u64,
        file_off + last as u64,
        hex(&expected[lo..hi]),
        hex(&actual[lo..hi]),
    );
    msg.push_str(&format!(
        "\n  (dump starts at file offset {})",
        file_off + lo as u64
    ));
    msg.push_str(&format!(
        "\n  hint: {}",
        origin_hint(actual, file_off, first, seeds)
    ));
    Err(msg)
}

/// Guess where the bytes at `actual[idx..]` came from.
fn origin_hint(actual: &[u8], file_off: u64, idx: usize, seeds: &[u64]) -> String {
    // the 8-aligned (in file terms) word holding idx, or the next one if
    // that word starts before the buffer
    let back = ((file_off + idx as u64) % 8) as usize;
    let i = if back <= idx {
        idx - back
    } else {
        idx + 8 - back
    };
    if i + 8 > actual.len() {
        return "too few bytes to decode".to_string();
    }
    let mut word = [0u8; 8];
    word.copy_from_slice(&actual[i..i + 8]);
    if word.iter().all(|&b| b == 0) {
        return format!(
            "zeros at file offset {} (hole / never written / stale page?)",
            file_off + i as u64
        );
    }
    if word.iter().all(|&b| b == crate::aio::READ_POISON) {
        return format!(
            "read-buffer poison at file offset {} (kernel did not fill the buffer)",
            file_off + i as u64
        );
    }
    let v = u64::from_le_bytes(word);
    for &s in seeds {
        let src = v ^ key(s);
        if src.is_multiple_of(8) && src < (1 << 40) {
            return format!(
                "word at file offset {} holds seed {s:#x} data from file offset {src} (shift {})",
                file_off + i as u64,
                src as i64 - (file_off + i as u64) as i64
            );
        }
    }
    format!(
        "word at file offset {} ({v:#018x}) decodes to no known pattern",
        file_off + i as u64
    )
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_matches_byte_at_for_any_alignment() {
        for off in [0u64, 1, 7, 8, 4095, 4113] {
            let v = make(3, off, 37);
            for (i, b) in v.iter().enumerate() {
                assert_eq!(*b, byte_at(3, off + i as u64), "off {off} i {i}");
            }
        }
    }

    #[test]
    fn verify_accepts_correct_and_rejects_shifted() {
        let good = make(9, 4096, 8192);
        assert!(verify(&good, 9, 4096).is_ok());
        let shifted = make(9, 4096 + 512, 8192);
        let e = verify(&shifted, 9, 4096).unwrap_err();
        assert!(e.contains("from file offset 4608 (shift 512)"), "{e}");
        // a one-byte shift is detected too
        let by_one = make(9, 4097, 8192);
        assert!(verify(&by_one, 9, 4096).is_err());
    }

    #[test]
    fn other_seed_and_zeros_are_recognised() {
        let other = make(2, 0, 64);
        let e = compare(&other, &make(1, 0, 64), 0, &[1, 2]).unwrap_err();
        assert!(e.contains("seed 0x2 data from file offset 0"), "{e}");
        let zeros = vec![0u8; 64];
        let e = verify(&zeros, 1, 0).unwrap_err();
        assert!(e.contains("zeros"), "{e}");
        assert!(e.contains("64 of 64 bytes differ"), "{e}");
    }

    #[test]
    fn single_corrupt_byte_is_located() {
        let mut v = make(5, 100, 1000);
        v[517] ^= 0xff;
        let e = verify(&v, 5, 100).unwrap_err();
        assert!(
            e.contains("1 of 1000 bytes differ, first at file offset 617"),
            "{e}"
        );
    }

    #[test]
    fn length_mismatch() {
        assert!(compare(&[1, 2], &[1], 0, &[]).is_err());
    }
}
