//! A worker's latencies for one series between two flushes.
//!
//! At light load a flush carries a handful of requests. Sending them as HDR
//! histograms cost a fresh ~39 KiB of zeroed histograms per series per
//! flush on the worker and nine whole-histogram additions on the collector
//! (each walks every bucket, ~3,300 of them): under callgrind at 200 req/s,
//! about a fifth of all instructions per request. So a flush sends the raw
//! values while there are few, and a histogram only once there are many,
//! where its fixed cost is spread over them.

use hdrhistogram::Histogram;

use super::Hists;

/// Values kept raw before switching to a histogram: 2 KiB of them.
const FEW: usize = 256;

/// Microsecond values, raw while few.
#[derive(Debug, Clone)]
pub enum Samples {
    Few(Vec<u64>),
    Many(Box<Histogram<u32>>),
}

impl Default for Samples {
    fn default() -> Self {
        Samples::Few(Vec::new())
    }
}

impl Samples {
    pub fn record(&mut self, v: u64) {
        match self {
            Samples::Few(vs) if vs.len() < FEW => vs.push(v),
            Samples::Few(vs) => {
                let mut h = Box::new(Hists::histogram());
                for &x in vs.iter().chain([&v]) {
                    h.saturating_record(x);
                }
                *self = Samples::Many(h);
            }
            Samples::Many(h) => h.saturating_record(v),
        }
    }

    /// Adds another period's values (a delta that waited for the channel).
    pub fn absorb(&mut self, other: Samples) {
        match other {
            Samples::Few(vs) => vs.into_iter().for_each(|v| self.record(v)),
            Samples::Many(mut h) => {
                self.add_to(&mut h);
                *self = Samples::Many(h);
            }
        }
    }

    /// Adds these values into a collector histogram.
    pub fn add_to(&self, into: &mut Histogram<u32>) {
        match self {
            Samples::Few(vs) => vs.iter().for_each(|&v| into.saturating_record(v)),
            Samples::Many(h) => {
                let _ = into.add(&**h);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> u64 {
        match self {
            Samples::Few(vs) => vs.len() as u64,
            Samples::Many(h) => h.len(),
        }
    }
}

/// One series' three latencies for one flush period.
#[derive(Debug, Clone, Default)]
pub struct LatencySamples {
    pub duration: Samples,
    pub ttfb: Samples,
    pub upstream: Samples,
}

impl LatencySamples {
    pub fn absorb(&mut self, o: LatencySamples) {
        self.duration.absorb(o.duration);
        self.ttfb.absorb(o.ttfb);
        self.upstream.absorb(o.upstream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(s: &Samples) -> Histogram<u32> {
        let mut h = Hists::histogram();
        s.add_to(&mut h);
        h
    }

    #[test]
    fn few_and_many_give_the_same_histogram() {
        let values: Vec<u64> = (0..1000u64).map(|i| 1 + i * i * 37 % 2_000_000).collect();
        let mut direct = Hists::histogram();
        values.iter().for_each(|&v| direct.saturating_record(v));
        for n in [0, 1, FEW - 1, FEW, FEW + 1, 1000] {
            let mut s = Samples::default();
            values[..n].iter().for_each(|&v| s.record(v));
            assert_eq!(matches!(s, Samples::Many(_)), n > FEW, "{n}");
            assert_eq!(s.len(), n as u64);
            let mut want = Hists::histogram();
            values[..n].iter().for_each(|&v| want.saturating_record(v));
            assert_eq!(hist_of(&s), want, "{n}");
        }
    }

    #[test]
    fn absorbing_keeps_every_value_in_every_combination() {
        let split = |n: usize| {
            let mut s = Samples::default();
            (0..n as u64).for_each(|v| s.record(v * 13 + 1));
            s
        };
        for (a, b) in [(3, 5), (3, 600), (600, 3), (600, 700), (FEW, 1), (0, 0)] {
            let mut x = split(a);
            x.absorb(split(b));
            assert_eq!(x.len(), (a + b) as u64, "{a}+{b}");
            let mut want = Hists::histogram();
            (0..a as u64).chain(0..b as u64).for_each(|v| want.saturating_record(v * 13 + 1));
            assert_eq!(hist_of(&x), want, "{a}+{b}");
        }
    }
}
