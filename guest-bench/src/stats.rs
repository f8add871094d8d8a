//! Pure statistics: percentiles (nearest rank), summaries and the quantile
//! vector the host plots as a CDF.

/// p50/p99/max/mean of a latency sample, in microseconds: the contract's,
/// as the host reads it.
pub use bufaio_contract::bench::Summary;

/// Nearest-rank percentile of an ascending slice (`p` in 0..=100).
/// Empty input gives 0.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Summarise nanosecond samples (sorted in place).
pub fn summarize(ns: &mut [u64]) -> Option<Summary> {
    if ns.is_empty() {
        return None;
    }
    ns.sort_unstable();
    let us = |v: u64| v as f64 / 1000.0;
    let total: u128 = ns.iter().map(|&v| v as u128).sum();
    Some(Summary {
        n: ns.len(),
        p50_us: us(percentile(ns, 50.0)),
        p99_us: us(percentile(ns, 99.0)),
        max_us: us(*ns.last().unwrap_or(&0)),
        mean_us: total as f64 / ns.len() as f64 / 1000.0,
        total_s: total as f64 / 1e9,
    })
}

/// `k + 1` evenly spaced quantiles (p0, p100/k, …, p100) of a sorted
/// sample, in microseconds: enough for a CDF plot without every sample.
pub fn quantiles(sorted: &[u64], k: usize) -> Vec<f64> {
    if sorted.is_empty() || k == 0 {
        return vec![];
    }
    (0..=k)
        .map(|i| {
            let p = 100.0 * i as f64 / k as f64;
            let v = if i == 0 {
                sorted[0]
            } else {
                percentile(sorted, p)
            };
            v as f64 / 1000.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), 50);
        assert_eq!(percentile(&v, 99.0), 99);
        assert_eq!(percentile(&v, 100.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
        let v = [10, 20, 30];
        assert_eq!(percentile(&v, 50.0), 20);
        assert_eq!(percentile(&v, 99.0), 30);
    }

    #[test]
    fn summary_in_microseconds() {
        let mut v = vec![3000, 1000, 2000, 1_000_000];
        let s = summarize(&mut v).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.p50_us, 2.0);
        assert_eq!(s.p99_us, 1000.0);
        assert_eq!(s.max_us, 1000.0);
        assert!((s.mean_us - 251.5).abs() < 1e-9);
        assert!((s.total_s - 0.001006).abs() < 1e-12);
        assert!(summarize(&mut []).is_none());
    }

    #[test]
    fn quantile_vector() {
        let v: Vec<u64> = (1..=1000).map(|x| x * 1000).collect();
        let q = quantiles(&v, 4);
        assert_eq!(q, vec![1.0, 250.0, 500.0, 750.0, 1000.0]);
        assert!(quantiles(&[], 4).is_empty());
    }
}
