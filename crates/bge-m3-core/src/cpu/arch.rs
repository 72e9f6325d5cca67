//! Proofs that the CPU has a set of instructions: one zero-sized token type per set, which only
//! run-time detection can make.
//!
//! A kernel compiled for instructions the baseline lacks (`#[target_feature(enable = ...)]`)
//! takes the token of its features as its first argument, so that no code can reach it without
//! one; its caller's one `unsafe` block states that the token proves the features, and nothing
//! else about the CPU. The token's field is private to this module, so `detect` is the only
//! way to get one (the doc-tests on `mod arch` in `cpu/mod.rs` show both).
//!
//! A token for another set is one more line of the `tokens!` list below: its name, what it
//! gives, and the features as `is_x86_feature_detected!` spells them (the kernel's
//! `#[target_feature]` names the same ones).

// Nothing here may be unsafe: the tokens are the proof the kernels' callers rely on.
#![forbid(unsafe_code)]

/// Defines each token: a zero-sized `Copy` type with a private field, made only by `detect`,
/// which checks every feature at run time (the answers are cached by the standard library).
macro_rules! tokens {
    ($($(#[$doc:meta])* $name:ident = $($feature:tt),+;)*) => {$(
        $(#[$doc])*
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name {
            _detected: (),
        }

        impl $name {
            /// The token, if this CPU has every feature it stands for.
            #[inline]
            pub(crate) fn detect() -> Option<Self> {
                let present = $(std::is_x86_feature_detected!($feature))&&+;
                present.then_some(Self { _detected: () })
            }
        }
    )*};
}

tokens! {
    /// AVX2 and FMA: eight f32 lanes per register and fused multiply-add (Haswell and later,
    /// Zen and later).
    Avx2Fma = "avx2", "fma";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_free_to_pass_and_exists_only_where_its_features_do() {
        assert_eq!(std::mem::size_of::<Avx2Fma>(), 0);
        let detected =
            std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma");
        assert_eq!(Avx2Fma::detect().is_some(), detected);
    }
}
