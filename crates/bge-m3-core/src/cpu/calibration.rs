//! What int8 needs to know of a model's activations: the range of each input channel of each
//! product, measured at load on a few built-in texts, and the smoothing it implies.
//!
//! Trained transformers carry a few input channels whose values are many times larger than the
//! rest, in every token. Quantized per token, such a row spends its 256 levels on those few
//! channels and leaves the others a handful. SmoothQuant (Xiao et al., 2023) moves part of that
//! range into the weights, which are quantized per output channel and take it well: input
//! channel `j` is divided by `s_j = r_j^α / m_j^(1-α)` and the weights' column `j` multiplied by
//! it, where `r_j` is the channel's largest magnitude seen on calibration texts and `m_j` that
//! of the column. The product is unchanged in exact arithmetic; quantized, both sides share the
//! range. With `α = 0.5`, on a trained BERT in a numpy model of this scheme, the dense vectors'
//! worst cosine with f32 went from 0.9980 to 0.9992; the engine's own figures are in
//! docs/BENCHMARKS.md ("int8 on the CPU").
//!
//! The texts below (ours, a few sentences in each of sixteen languages and some code) are run
//! through the f32 layers one layer at a time while the model loads, so the statistics are the
//! model's own and need no step from the user.

/// The calibration texts.
pub(crate) const TEXTS: &[&str] = &[
    "What is BGE M3? It is an embedding model that gives dense, sparse and multi-vector \
     representations of a text in one forward pass.",
    "The committee approved the budget on Tuesday, but the final vote on the new library was \
     postponed until the spring.",
    "To reset your password, open the settings page, choose Security and follow the link we \
     send to your email address.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "BM25 ranks documents by term frequency and inverse document frequency.",
    "¿Dónde está la estación de tren más cercana? Necesito llegar a Madrid antes de las ocho.",
    "Le musée ouvre ses portes à neuf heures; l'entrée est gratuite le premier dimanche du mois.",
    "Die Bundesregierung hat am Mittwoch neue Regeln für den Ausbau der Windenergie beschlossen.",
    "O clima da região é tropical, com chuvas fortes entre dezembro e março.",
    "Il treno per Firenze è in ritardo di venti minuti a causa di un guasto tecnico.",
    "Москва является крупнейшим городом России и её политическим центром.",
    "机器学习是人工智能的一个分支,它使计算机能够从数据中学习。",
    "北京是中国的首都,也是全国的政治和文化中心。",
    "東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。",
    "서울은 대한민국의 수도이며 한강이 도시를 가로질러 흐릅니다.",
    "القاهرة هي عاصمة مصر وأكبر مدينة في العالم العربي.",
    "भारत एक विशाल देश है जिसमें अनेक भाषाएँ बोली जाती हैं।",
    "Türkiye'nin başkenti Ankara'dır, en kalabalık şehri ise İstanbul'dur.",
    "Hà Nội là thủ đô của Việt Nam và có lịch sử hơn một nghìn năm.",
    "Indonesia adalah negara kepulauan terbesar di dunia dengan lebih dari tujuh belas ribu pulau.",
    "Warszawa jest stolicą Polski i największym miastem tego kraju.",
    "fn main() { let v: Vec<u32> = (0..10).map(|x| x * x).collect(); println!(\"{v:?}\"); }",
    "SELECT name, COUNT(*) FROM orders WHERE created_at > '2024-01-01' GROUP BY name;",
    "The price rose from $12.50 to $14.75 (an 18% increase) between 2019 and 2023.",
];

/// Each text is cut to this many tokens (markers included): what a channel's range is shows in
/// every token, and the calibration's f32 forward pass is the most of what int8 adds to the
/// load (a full-size model: about 1 GFLOP a token).
pub(crate) const LENGTH: usize = 16;

/// The exponent α of the smoothing: the share of each channel's range moved into the weights.
pub(crate) const ALPHA: f32 = 0.5;

/// The largest magnitude of each input channel of a product, over the calibration tokens.
#[derive(Debug, Clone)]
pub(crate) struct InputRange(pub(crate) Vec<f32>);

impl InputRange {
    pub(crate) fn new(width: usize) -> Self {
        Self(vec![0.0; width])
    }

    /// Takes in the row-major rows `x` of `self.0.len()` channels.
    pub(crate) fn observe(&mut self, x: &[f32]) {
        let width = self.0.len();
        for row in x.chunks_exact(width.max(1)) {
            for (range, &v) in self.0.iter_mut().zip(row) {
                *range = range.max(v.abs());
            }
        }
    }

    /// The smoothing factors `s_j` for a weight whose columns' largest magnitudes are
    /// `columns`; 1 where a side is zero or not finite.
    pub(crate) fn smoothing(&self, columns: &[f32]) -> Vec<f32> {
        assert_eq!(self.0.len(), columns.len());
        self.0
            .iter()
            .zip(columns)
            .map(|(&r, &m)| {
                let s = r.powf(ALPHA) / m.powf(1.0 - ALPHA);
                if r > 0.0 && m > 0.0 && s.is_finite() && s > 0.0 {
                    s
                } else {
                    1.0
                }
            })
            .collect()
    }
}

/// The ranges of the inputs of a layer's four products.
#[derive(Debug, Clone)]
pub(crate) struct LayerRanges {
    pub(crate) qkv: InputRange,
    pub(crate) attention_output: InputRange,
    pub(crate) intermediate: InputRange,
    pub(crate) output: InputRange,
}

impl LayerRanges {
    pub(crate) fn new(hidden: usize, intermediate: usize) -> Self {
        Self {
            qkv: InputRange::new(hidden),
            attention_output: InputRange::new(hidden),
            intermediate: InputRange::new(hidden),
            output: InputRange::new(intermediate),
        }
    }
}

/// The largest magnitude of each column of the row-major matrices `parts` of `inner` columns.
pub(crate) fn column_ranges<P: std::ops::Deref<Target = [f32]>>(
    parts: &[P],
    inner: usize,
) -> Vec<f32> {
    let mut ranges = vec![0f32; inner];
    for part in parts {
        for row in part.chunks_exact(inner.max(1)) {
            for (range, &w) in ranges.iter_mut().zip(row) {
                *range = range.max(w.abs());
            }
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_smoothing() {
        let mut range = InputRange::new(3);
        range.observe(&[1.0, -4.0, 0.0, -2.0, 1.0, 0.0]);
        assert_eq!(range.0, [2.0, 4.0, 0.0]);
        let columns = column_ranges(&[vec![1.0f32, 0.25, 3.0], vec![-0.5, 1.0, 0.0]], 3);
        assert_eq!(columns, [1.0, 1.0, 3.0]);
        let s = range.smoothing(&columns);
        assert_eq!(s, [2f32.sqrt(), 2.0, 1.0]);
        // Each side holds the same range once smoothed: r / s = m · s.
        assert!((4.0 / s[1] - 1.0 * s[1]).abs() < 1e-6);
    }
}
