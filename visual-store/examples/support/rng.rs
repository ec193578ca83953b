//! The examples' seedable random numbers (SplitMix64) and vector helpers; each example uses
//! the part it needs.
#![allow(dead_code)]

pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in (0, 1].
    pub fn unit(&mut self) -> f32 {
        ((self.next() >> 40) + 1) as f32 / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller).
    pub fn gaussian(&mut self) -> f32 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
}

/// `v` scaled to unit length.
pub fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Unit vectors drawn around fixed random centres: photo embeddings cluster, and uniform
/// noise in 512-d would be a needlessly adversarial case for any ANN index.
pub struct Clustered {
    rng: Rng,
    centres: Vec<Vec<f32>>,
}

impl Clustered {
    pub fn new(seed: u64, centres: usize, dimension: usize) -> Self {
        let mut rng = Rng(seed);
        let centres = (0..centres).map(|_| normalised((0..dimension).map(|_| rng.signed()).collect())).collect();
        Clustered { rng, centres }
    }

    /// A centre plus uniform noise of 0.08 per coordinate, normalised.
    pub fn vector(&mut self) -> Vec<f32> {
        let centre = &self.centres[(self.rng.next() % self.centres.len() as u64) as usize];
        normalised(centre.iter().map(|c| c + 0.08 * self.rng.signed()).collect())
    }
}
