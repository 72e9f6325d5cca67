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
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// AVX2 alone: 256-bit integer operations (int8's widened kernel and its row quantizer).
    Avx2 = "avx2";
    /// AVX-512 VNNI, with the AVX-512 foundation it extends: `vpdpbusd` on 512-bit registers
    /// (int8's fastest kernel); and AVX2, for the row quantizer the kernel's rows go through.
    Avx512Vnni = "avx2", "avx512f", "avx512vnni";
    /// AVX-VNNI: `vpdpbusd` on 256-bit registers (Alder Lake and later without AVX-512); and
    /// AVX2, which it extends.
    AvxVnni = "avx2", "avxvnni";
    /// AVX-512 BW, with the AVX-512 foundation it extends: byte and word operations on 512-bit
    /// registers (int8's kernel for Skylake-SP, which has AVX-512 without VNNI); and AVX2, for
    /// the row quantizer.
    Avx512Bw = "avx2", "avx512f", "avx512bw";
}

/// A token whose features include AVX2's proves AVX2: the row quantizer of int8 runs on AVX2
/// under every kernel that has it. (Here, where the field is visible: only a set that lists
/// `"avx2"` above gets a conversion.)
macro_rules! implies_avx2 {
    ($($name:ident),*) => {$(
        impl From<$name> for Avx2 {
            fn from(_: $name) -> Self {
                Self { _detected: () }
            }
        }
    )*};
}

implies_avx2!(Avx512Vnni, AvxVnni, Avx512Bw);

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

    /// Each token stands for exactly the features it lists, and one that converts to `Avx2`
    /// exists only where AVX2 does.
    #[test]
    fn each_token_is_detected_with_its_features_and_implies_what_it_converts_to() {
        let has = |feature: &str| match feature {
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "avx512f" => std::is_x86_feature_detected!("avx512f"),
            "avx512vnni" => std::is_x86_feature_detected!("avx512vnni"),
            "avxvnni" => std::is_x86_feature_detected!("avxvnni"),
            "avx512bw" => std::is_x86_feature_detected!("avx512bw"),
            other => unreachable!("{other}"),
        };
        assert_eq!(Avx2::detect().is_some(), has("avx2"));
        let vnni512 = ["avx2", "avx512f", "avx512vnni"].iter().all(|f| has(f));
        assert_eq!(Avx512Vnni::detect().is_some(), vnni512);
        assert_eq!(AvxVnni::detect().is_some(), has("avx2") && has("avxvnni"));
        let bw = ["avx2", "avx512f", "avx512bw"].iter().all(|f| has(f));
        assert_eq!(Avx512Bw::detect().is_some(), bw);
        for avx2 in [
            Avx512Vnni::detect().map(Avx2::from),
            AvxVnni::detect().map(Avx2::from),
            Avx512Bw::detect().map(Avx2::from),
        ]
        .into_iter()
        .flatten()
        {
            assert_eq!(Some(avx2), Avx2::detect());
        }
    }
}
