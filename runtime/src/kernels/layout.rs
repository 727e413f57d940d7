//! How activations lie in memory between our layers.

/// The order of one image's activations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// `[channels][pixels]`: NCHW, as ONNX and tract have it.
    #[default]
    Planar,
    /// `[pixels][pixel_floats]`: NHWC, kept between x86 layers that read and write it
    /// faster (see `crate::engine::channels_last`). Each pixel's channels come first in
    /// its `pixel_floats`, which may leave unused floats after them ([`padded_pixel`]).
    ChannelsLast { pixel_floats: usize },
}

impl Layout {
    /// Channels-last with nothing between one pixel's channels and the next pixel's.
    pub fn dense_channels_last(channels: usize) -> Layout {
        Layout::ChannelsLast {
            pixel_floats: channels,
        }
    }

    pub fn is_channels_last(self) -> bool {
        matches!(self, Layout::ChannelsLast { .. })
    }

    /// Floats an image of `channels` channels takes per pixel in this layout.
    pub fn floats_per_pixel(self, channels: usize) -> usize {
        match self {
            Layout::Planar => channels,
            Layout::ChannelsLast { pixel_floats } => pixel_floats,
        }
    }
}

/// The layouts of a layer's input and output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Layouts {
    pub input: Layout,
    pub output: Layout,
}

/// Floats per pixel of a channels-last tensor of `channels` channels that the engine
/// passes between a 1x1 and a depthwise layer: one 64-byte line more when a pixel is a
/// multiple of 8 lines. Unpadded, such pixels (512 B to 4 KiB apart) put one channel
/// block's lines into at most 8 of a 32 KiB 8-way L1's 64 sets, and the depthwise
/// kernel's three input rows no longer fit them; one line more spreads them over all 64.
/// (`depthwise_speed`, `cl` against `padded`, three runs on a noisy VM: 7x7 maps of 512
/// channels AVX2 6-8 against 11-18 GMAC/s, AVX-512 10-13 against 17-22; 14x14 maps of
/// 256 AVX2 11-13 against 19-27, AVX-512 15-19 against 21-25.)
pub fn padded_pixel(channels: usize) -> usize {
    if channels.is_multiple_of(128) {
        channels + 16
    } else {
        channels
    }
}
