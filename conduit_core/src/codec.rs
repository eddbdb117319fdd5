//! Little-endian byte encoding shared by snapshots and deltas: a writer that appends a CRC-32
//! of everything before it, and a reader that checks that CRC before reading a single field,
//! so a corrupt buffer is refused as a whole instead of half-read.

use crate::error::{CoreError, CoreResult};

/// Appends fields; [`Writer::finish`] seals the buffer with its checksum.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn with_capacity(n: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(n + 4),
        }
    }
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64s(&mut self, vs: &[f64]) {
        self.buf.reserve(vs.len() * 8);
        for v in vs {
            self.f64(*v);
        }
    }
    pub fn str(&mut self, s: &str) {
        self.u32(s.len() as u32);
        self.bytes(s.as_bytes());
    }
    pub fn finish(mut self) -> Vec<u8> {
        let crc = crc32fast::hash(&self.buf);
        self.u32(crc);
        self.buf
    }
}

/// Reads fields back, every read bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks `magic`, then the trailing CRC-32, before anything else is read.
    pub fn open(data: &'a [u8], magic: &[u8], what: &'static str) -> CoreResult<Self> {
        if data.len() < magic.len() + 4 || &data[..magic.len()] != magic {
            return Err(CoreError::corrupt(
                what,
                "not a Conduit buffer of this type (bad magic bytes)",
            ));
        }
        let (body, tail) = data.split_at(data.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32fast::hash(body) != stored {
            return Err(CoreError::corrupt(
                what,
                "checksum mismatch: the bytes are corrupt or truncated",
            ));
        }
        Ok(Reader {
            buf: body,
            pos: magic.len(),
            what,
        })
    }

    fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(CoreError::corrupt(self.what, "truncated"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> CoreResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> CoreResult<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> CoreResult<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    pub fn u64(&mut self) -> CoreResult<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    pub fn array32(&mut self) -> CoreResult<[u8; 32]> {
        Ok(self.take(32)?.try_into().expect("32 bytes"))
    }
    /// A finite f64 (the core never stores NaN or infinity).
    pub fn f64(&mut self, field: &'static str) -> CoreResult<f64> {
        let v = f64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        if v.is_finite() {
            Ok(v)
        } else {
            Err(CoreError::corrupt(field, "value is not finite"))
        }
    }
    pub fn f64s(&mut self, n: usize, field: &'static str) -> CoreResult<Vec<f64>> {
        if (self.buf.len() - self.pos) / 8 < n {
            return Err(CoreError::corrupt(self.what, "truncated"));
        }
        (0..n).map(|_| self.f64(field)).collect()
    }
    pub fn str(&mut self, field: &'static str) -> CoreResult<String> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| CoreError::corrupt(field, "not UTF-8"))
    }
    /// Refuses trailing bytes, which would mean a layout this reader does not understand.
    pub fn end(&self) -> CoreResult<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(CoreError::corrupt(self.what, "unexpected trailing bytes"))
        }
    }
}
