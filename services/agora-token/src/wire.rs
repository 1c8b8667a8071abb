//! Little-endian primitives of the token format (SPEC §2).
//!
//! Writing is fallible only where the format's `u16` length prefixes and counts can overflow;
//! reading never indexes out of bounds: every read goes through `split_first_chunk` /
//! `split_at_checked`, so a truncated or hostile payload becomes a [`DecodeError`], not a panic.

use crate::{BuildError, DecodeError};

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

pub(crate) fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes a `u16` count, refusing counts the format cannot represent.
pub(crate) fn put_count(
    out: &mut Vec<u8>,
    count: usize,
    what: &'static str,
) -> Result<(), BuildError> {
    let n = u16::try_from(count).map_err(|_| BuildError::TooManyEntries { what, count })?;
    put_u16(out, n);
    Ok(())
}

/// Writes `bytes(x)`: a `u16` length followed by the raw bytes.
pub(crate) fn put_bytes(
    out: &mut Vec<u8>,
    bytes: &[u8],
    field: &'static str,
) -> Result<(), BuildError> {
    let len = u16::try_from(bytes.len()).map_err(|_| BuildError::StringTooLong {
        field,
        len: bytes.len(),
    })?;
    put_u16(out, len);
    out.extend_from_slice(bytes);
    Ok(())
}

/// Writes `map_u32`: a `u16` count, then `u16 key, u32 value` pairs in ascending key order
/// (a `BTreeMap` iterates in that order already).
pub(crate) fn put_map_u32(
    out: &mut Vec<u8>,
    map: &std::collections::BTreeMap<u16, u32>,
    what: &'static str,
) -> Result<(), BuildError> {
    put_count(out, map.len(), what)?;
    for (&k, &v) in map {
        put_u16(out, k);
        put_u32(out, v);
    }
    Ok(())
}

/// A cursor over untrusted bytes.
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    /// The bytes not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(DecodeError::Truncated { field })?;
        self.buf = tail;
        Ok(*head)
    }

    pub(crate) fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn i16(&mut self, field: &'static str) -> Result<i16, DecodeError> {
        self.array(field).map(i16::from_le_bytes)
    }

    /// Reads `bytes(x)`; a length prefix that runs past the end is an error, as in Node.
    pub(crate) fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(self.u16(field)?);
        let (head, tail) = self
            .buf
            .split_at_checked(len)
            .ok_or(DecodeError::Truncated { field })?;
        self.buf = tail;
        Ok(head)
    }

    /// Reads `map_u32`. A repeated key keeps the last value, as in Node and Python.
    pub(crate) fn map_u32(
        &mut self,
        field: &'static str,
    ) -> Result<std::collections::BTreeMap<u16, u32>, DecodeError> {
        let count = self.u16(field)?;
        let mut map = std::collections::BTreeMap::new();
        for _ in 0..count {
            let k = self.u16(field)?;
            let v = self.u32(field)?;
            map.insert(k, v);
        }
        Ok(map)
    }
}
