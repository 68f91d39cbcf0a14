//! Reader and writer of the IDX format that MNIST and Fashion-MNIST ship in, raw or gzipped.
//!
//! An IDX file is a big-endian header (a magic number, then one `u32` per dimension) followed
//! by the data, one byte per value here. The reader trusts nothing in the header: it checks the
//! magic number and the dimensions, compares the declared size with what the file really holds
//! before allocating, and rejects both truncated files and files with data left over.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use flate2::Compression;
use flate2::GzBuilder;
use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// The largest image side the reader accepts; anything larger is a damaged header.
const MAX_SIDE: u32 = 1 << 16;

/// Deflate cannot expand data by more than about 1032 to 1, so a gzip file of `n` bytes never
/// decompresses to more than this many times `n`; the bound caps what a lying header can make
/// the reader reserve.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// The first two bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Images read from an IDX file: `count` images of `rows × cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Height of each image.
    pub rows: usize,
    /// Width of each image.
    pub cols: usize,
    /// `count × rows × cols` pixel values, image after image.
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (magic `0x00000803`), raw or gzip-compressed.
///
/// Compression is recognised by the gzip magic bytes, not by the file's name.
pub fn read_idx_images(path: &Path) -> Result<IdxImages, DataError> {
    let mut source = Source::open(path)?;
    let header = source.read_header("image", IDX_IMAGES_MAGIC, 16)?;
    let [_, count, rows, cols] = words::<4>(&header);
    for (name, value) in [("image count", count), ("rows", rows), ("columns", cols)] {
        if value == 0 {
            return Err(bad_header(path, format!("{name} is 0")));
        }
    }
    for (name, value) in [("rows", rows), ("columns", cols)] {
        if value > MAX_SIDE {
            return Err(bad_header(
                path,
                format!("{value} {name} is more than the {MAX_SIDE} an image may have"),
            ));
        }
    }
    let expected = u64::from(count) * u64::from(rows) * u64::from(cols);
    let dims = format!("{count}×{rows}×{cols}");
    let pixels = source.read_payload(expected, &dims)?;
    Ok(IdxImages {
        count: count as usize,
        rows: rows as usize,
        cols: cols as usize,
        pixels,
    })
}

/// Reads an IDX label file (magic `0x00000801`), raw or gzip-compressed.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    let mut source = Source::open(path)?;
    let header = source.read_header("label", IDX_LABELS_MAGIC, 8)?;
    let [_, count] = words::<2>(&header);
    if count == 0 {
        return Err(bad_header(path, "label count is 0".into()));
    }
    source.read_payload(u64::from(count), &count.to_string())
}

/// Writes images as a gzip-compressed IDX file, with a fixed gzip header (no name, no time) so
/// that the same images always give the same bytes.
pub fn write_idx_images(path: &Path, images: &IdxImages) -> Result<(), DataError> {
    let expected = images
        .count
        .checked_mul(images.rows)
        .and_then(|x| x.checked_mul(images.cols));
    if expected != Some(images.pixels.len()) {
        return Err(DataError::InvalidArgument {
            name: "IDX images",
            reason: format!(
                "{} pixels are not {}×{}×{}",
                images.pixels.len(),
                images.count,
                images.rows,
                images.cols
            ),
        });
    }
    let mut header = Vec::with_capacity(16);
    for value in [images.count, images.rows, images.cols] {
        header.extend_from_slice(&to_u32(value, "image count or side")?.to_be_bytes());
    }
    write_gzip(path, IDX_IMAGES_MAGIC, &header, &images.pixels)
}

/// Writes labels as a gzip-compressed IDX file, with a fixed gzip header.
pub fn write_idx_labels(path: &Path, labels: &[u8]) -> Result<(), DataError> {
    let count = to_u32(labels.len(), "label count")?;
    write_gzip(path, IDX_LABELS_MAGIC, &count.to_be_bytes(), labels)
}

fn to_u32(value: usize, name: &'static str) -> Result<u32, DataError> {
    u32::try_from(value).map_err(|_| DataError::InvalidArgument {
        name,
        reason: format!("{value} does not fit the 32 bits of an IDX header"),
    })
}

fn write_gzip(path: &Path, magic: u32, dims: &[u8], data: &[u8]) -> Result<(), DataError> {
    let io = |source| DataError::io(path, source);
    let file = File::create(path).map_err(io)?;
    // GzBuilder writes mtime 0 and no file name unless told otherwise, which keeps the output
    // reproducible.
    let mut encoder = GzBuilder::new().write(BufWriter::new(file), Compression::best());
    encoder.write_all(&magic.to_be_bytes()).map_err(io)?;
    encoder.write_all(dims).map_err(io)?;
    encoder.write_all(data).map_err(io)?;
    let mut writer = encoder.finish().map_err(io)?;
    writer.flush().map_err(io)?;
    Ok(())
}

/// An open IDX file, positioned at its start (raw) or decompressing (gzip).
struct Source<'a> {
    path: &'a Path,
    reader: Box<dyn Read>,
    kind: SourceKind,
    /// Bytes of header already read, counted in decompressed bytes.
    header_len: u64,
}

enum SourceKind {
    /// An uncompressed file of this many bytes.
    Raw { len: u64 },
    /// A gzip file of this many compressed bytes.
    Gzip { len: u64 },
}

impl<'a> Source<'a> {
    fn open(path: &'a Path) -> Result<Self, DataError> {
        let io = |source| DataError::io(path, source);
        let mut file = File::open(path).map_err(io)?;
        let len = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        let (reader, kind): (Box<dyn Read>, _) = if got == 2 && magic == GZIP_MAGIC {
            // Multi-member streams (from pigz or concatenated gzips) are valid gzip too.
            let decoder = MultiGzDecoder::new(BufReader::new(file));
            (Box::new(decoder), SourceKind::Gzip { len })
        } else {
            (Box::new(BufReader::new(file)), SourceKind::Raw { len })
        };
        Ok(Source {
            path,
            reader,
            kind,
            header_len: 0,
        })
    }

    fn read_error(&self, source: std::io::Error) -> DataError {
        match self.kind {
            SourceKind::Raw { .. } => DataError::io(self.path, source),
            SourceKind::Gzip { .. } => DataError::Gzip {
                path: self.path.to_path_buf(),
                source,
            },
        }
    }

    /// Reads a header of `needed` bytes, checking the magic number first so that a file of
    /// the wrong kind is reported as such even when it is also short.
    fn read_header(
        &mut self,
        kind: &'static str,
        magic: u32,
        needed: usize,
    ) -> Result<Vec<u8>, DataError> {
        let mut header = vec![0u8; needed];
        let got = read_full(&mut self.reader, &mut header).map_err(|e| self.read_error(e))?;
        if got >= 4 {
            let [found] = words::<1>(&header);
            if found != magic {
                return Err(DataError::NotIdx {
                    path: self.path.to_path_buf(),
                    kind,
                    found,
                    expected: magic,
                });
            }
        }
        if got < needed {
            return Err(DataError::TruncatedHeader {
                path: self.path.to_path_buf(),
                needed,
                actual: got,
            });
        }
        self.header_len = needed as u64;
        Ok(header)
    }

    /// Reads exactly `expected` bytes of data and checks that nothing follows them.
    fn read_payload(&mut self, expected: u64, dims: &str) -> Result<Vec<u8>, DataError> {
        let truncated = |actual| DataError::TruncatedIdx {
            path: self.path.to_path_buf(),
            dims: dims.to_string(),
            expected,
            actual,
        };
        let trailing = |extra: String| DataError::TrailingData {
            path: self.path.to_path_buf(),
            dims: dims.to_string(),
            expected,
            extra,
        };
        let reserve = match self.kind {
            SourceKind::Raw { len } => {
                // The header has already been read, so the rest of the file is the data; its
                // size is known before a single byte of it is allocated.
                let available = len.saturating_sub(self.header_len);
                match available.cmp(&expected) {
                    std::cmp::Ordering::Less => return Err(truncated(available)),
                    std::cmp::Ordering::Greater => {
                        return Err(trailing((available - expected).to_string()));
                    }
                    std::cmp::Ordering::Equal => expected,
                }
            }
            SourceKind::Gzip { len } => expected.min(len.saturating_mul(MAX_DEFLATE_RATIO)),
        };
        let mut data = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        let got = (&mut self.reader)
            .take(expected)
            .read_to_end(&mut data)
            .map_err(|e| self.read_error(e))? as u64;
        if got < expected {
            return Err(truncated(got));
        }
        let mut probe = [0u8; 1];
        let extra = read_full(&mut self.reader, &mut probe).map_err(|e| self.read_error(e))?;
        if extra > 0 {
            return Err(trailing("at least 1".into()));
        }
        Ok(data)
    }
}

/// Reads until `buf` is full or the stream ends, returning the number of bytes read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let Some(rest) = buf.get_mut(filled..) else {
            break;
        };
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

/// The big-endian `u32` words of a header of exactly `4 × N` bytes.
fn words<const N: usize>(header: &[u8]) -> [u32; N] {
    std::array::from_fn(|i| {
        let mut word = [0u8; 4];
        if let Some(bytes) = header.get(4 * i..4 * i + 4) {
            word.copy_from_slice(bytes);
        }
        u32::from_be_bytes(word)
    })
}

fn bad_header(path: &Path, reason: String) -> DataError {
    DataError::BadIdxHeader {
        path: path.to_path_buf(),
        reason,
    }
}
