//! How activations lie in memory between our layers.

/// The order of one image's activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[channels][pixels]`: NCHW, as ONNX and tract have it.
    #[default]
    Planar,
    /// `[pixels][channels]`: NHWC, kept between x86 layers that read and write it faster
    /// (see `crate::engine::channels_last`).
    ChannelsLast,
}

/// The layouts of a layer's input and output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Layouts {
    pub input: Layout,
    pub output: Layout,
}
