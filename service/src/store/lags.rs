//! Lag-1 moments of each camera's consecutive frames per slice, for effective sample sizes (see evaluate.rs).

use framewatch_metrics::stats::LagMoments;

/// Lag-1 moments in two generations of one window length each, by capture time: the window's estimate merges
/// both, so it always covers at least one full window without keeping a copy per sub-window (memory).
#[derive(Debug, Default)]
pub(super) struct Lags {
    /// Window number (sub-window index / steps) of `current`.
    pub(super) epoch: i64,
    pub(super) current: Vec<LagMoments>,
    pub(super) previous: Vec<LagMoments>,
}

impl Lags {
    /// The generation for a frame of window number `epoch`, rolling forward as time moves; `None` for a frame
    /// older than both generations.
    pub(super) fn generation(&mut self, epoch: i64, metrics: usize) -> Option<&mut Vec<LagMoments>> {
        if self.current.is_empty() {
            self.current = vec![LagMoments::default(); metrics];
            self.previous = vec![LagMoments::default(); metrics];
            self.epoch = epoch;
        }
        if epoch > self.epoch {
            if epoch == self.epoch + 1 {
                std::mem::swap(&mut self.current, &mut self.previous);
            } else {
                self.previous.fill(LagMoments::default());
            }
            self.current.fill(LagMoments::default());
            self.epoch = epoch;
        }
        match self.epoch - epoch {
            0 => Some(&mut self.current),
            1 => Some(&mut self.previous),
            _ => None,
        }
    }

    /// Both generations merged, one per metric, into `out` (cleared first).
    pub(super) fn merged_into(&self, metrics: usize, out: &mut Vec<LagMoments>) {
        out.clear();
        out.resize(metrics, LagMoments::default());
        for (o, (c, p)) in out.iter_mut().zip(self.current.iter().zip(&self.previous)) {
            o.merge(c);
            o.merge(p);
        }
    }
}
