// Interop between our AccessToken2 code (crate agora-token, reached through the media-token CLI)
// and Agora's own npm package agora-token@2.0.6:
//   * tokens we sign parse and verify with the package's AccessToken2;
//   * tokens the package builds verify with our `inspect`, and fail with a wrong certificate;
//   * with the same issueTs and salt, both inflate to the same payload bytes. The compressed
//     bytes may differ (Node bundles Chromium's zlib); Agora inflates, so payloads are what count.
//
// Run: cd tests/js && npm ci && MEDIA_TOKEN_BIN=/path/to/media-token node --test
import { describe, test } from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { inflateSync } from 'node:zlib'

import pkg from 'agora-token'
// The package's index does not export AccessToken2 (the parser); it is CommonJS without an
// "exports" map, so the module can be imported by path.
import accessToken2Module from 'agora-token/src/AccessToken2.js'

const { RtcTokenBuilder, RtcRole } = pkg
const { AccessToken2, kRtcServiceType } = accessToken2Module

const BIN = process.env.MEDIA_TOKEN_BIN
const skip = BIN ? false : 'MEDIA_TOKEN_BIN is not set (make test sets it to target/debug/media-token)'
if (BIN && !existsSync(BIN)) throw new Error(`MEDIA_TOKEN_BIN=${BIN} does not exist; build media-token first`)

const APP_ID = '970CA35de60c44645bbae8a215061b33'
const CERT = '5CFd2fd1755d40ecb72977518be15d3b'
const WRONG_CERT = '0123456789abcdef0123456789abcdef'
const SALT_MAX = 99999999
const PRIVILEGE_NAMES = ['joinChannel', 'publishAudioStream', 'publishVideoStream', 'publishDataStream']

// Several channels and accounts: numeric uids (0 is the "any uid" wildcard and packs as ""),
// the string account "0" (which stays "0"), both roles, and a non-ASCII account.
const CASES = [
  { name: 'numeric uid, publisher', channel: '7d72365eb983485397e3e3f9d460bdda', uid: 2882341273, role: 'publisher' },
  { name: 'uid 0, subscriber', channel: 'room1', uid: 0, role: 'subscriber' },
  { name: 'uid 0, publisher', channel: 'room1', uid: 0, role: 'publisher' },
  { name: 'max u32 uid', channel: 'maxuid', uid: 4294967295, role: 'subscriber' },
  { name: 'uid 1', channel: 'c', uid: 1, role: 'publisher' },
  { name: 'account "0"', channel: 'room1', account: '0', role: 'publisher' },
  { name: 'string account, subscriber', channel: 'lobby-42', account: 'alice@example.com', role: 'subscriber' },
  { name: 'unicode account', channel: 'unicode-room', account: '用户名-テスト-😀🎉 Zoé', role: 'publisher' },
  { name: 'special characters', channel: '!#$%&()+-:;<=.>?@[]^_{}|~, ', account: 'user !#$%&()+-:;<=.>?@[]^_{}|~,', role: 'subscriber' },
]

/** The account string the token packs for a case. */
const packedAccount = c => (c.uid !== undefined ? (c.uid === 0 ? '' : String(c.uid)) : c.account)

const privilegeIds = role => (role === 'publisher' ? [1, 2, 3, 4] : [1])

function sign(c, { expire = 3600, privilegeExpire = 3600, issueTs, salt } = {}) {
  const args = ['sign', '--app-id', APP_ID, '--app-certificate', CERT, '--channel', c.channel]
  if (c.uid !== undefined) args.push('--uid', String(c.uid))
  else args.push('--account', c.account)
  args.push('--role', c.role, '--expire', String(expire), '--privilege-expire', String(privilegeExpire))
  if (issueTs !== undefined) args.push('--issue-ts', String(issueTs))
  if (salt !== undefined) args.push('--salt', String(salt))
  const token = execFileSync(BIN, args, { encoding: 'utf8' }).trim()
  assert.match(token, /^007[A-Za-z0-9+/]+={0,2}$/)
  return token
}

function runInspect(token, cert) {
  const args = ['inspect', token]
  if (cert !== undefined) args.push('--app-certificate', cert)
  return spawnSync(BIN, args, { encoding: 'utf8' })
}

function inspect(token, cert) {
  const r = runInspect(token, cert)
  assert.equal(r.status, 0, `inspect failed: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/** Parses with the npm package and checks that it accepted the token. */
function npmParse(token) {
  const parsed = new AccessToken2()
  assert.equal(parsed.from_string(token), true, 'npm AccessToken2.from_string rejected the token')
  return parsed
}

const payloadOf = token => inflateSync(Buffer.from(token.slice(3), 'base64'))

/**
 * Runs `build` with the package's clock and salt pinned: AccessToken2 takes issueTs from
 * `new Date().getTime() / 1000` and salt from `Math.floor(Math.random() * 99999999) + 1`.
 */
function withPinnedClockAndSalt(issueTs, salt, build) {
  const { getTime } = Date.prototype
  const { random } = Math
  Date.prototype.getTime = () => issueTs * 1000
  Math.random = () => (salt - 1 + 0.5) / SALT_MAX
  try {
    return build()
  } finally {
    Date.prototype.getTime = getTime
    Math.random = random
  }
}

function npmBuild(c, { expire = 3600, privilegeExpire = 3600 } = {}) {
  const role = c.role === 'publisher' ? RtcRole.PUBLISHER : RtcRole.SUBSCRIBER
  const token =
    c.uid !== undefined
      ? RtcTokenBuilder.buildTokenWithUid(APP_ID, CERT, c.channel, c.uid, role, expire, privilegeExpire)
      : RtcTokenBuilder.buildTokenWithUserAccount(APP_ID, CERT, c.channel, c.account, role, expire, privilegeExpire)
  assert.ok(token.startsWith('007'), 'npm builder refused the inputs')
  return token
}

describe('tokens signed by media-token are accepted by the npm agora-token parser', { skip }, () => {
  for (const c of CASES) {
    test(`${c.name}: parses, verifies, and carries the expected RTC service`, () => {
      const token = sign(c, { expire: 7200, privilegeExpire: 3600, issueTs: 1735689600, salt: 4242 })
      const parsed = npmParse(token)
      assert.equal(parsed.verifySignature(CERT), true)
      assert.equal(parsed.verifySignature(WRONG_CERT), false)
      assert.equal(parsed.verifySignature(CERT.toUpperCase()), false)

      assert.equal(parsed.appId.toString(), APP_ID)
      assert.equal(parsed.issueTs, 1735689600)
      assert.equal(parsed.expire, 7200)
      assert.equal(parsed.salt, 4242)
      assert.equal(parsed.services.length, 1)
      const [rtc] = parsed.services
      assert.equal(rtc.service_type(), kRtcServiceType)
      assert.equal(rtc.__channel_name.toString('utf8'), c.channel)
      assert.equal(rtc.__uid.toString('utf8'), packedAccount(c))
      const expected = Object.fromEntries(privilegeIds(c.role).map(id => [id, 3600]))
      assert.deepEqual({ ...rtc.__privileges }, expected)
    })
  }

  test('without --issue-ts and --salt, a token uses the current time and a random salt', () => {
    const before = Math.floor(Date.now() / 1000)
    const first = npmParse(sign(CASES[0]))
    const second = npmParse(sign(CASES[0]))
    const after = Math.ceil(Date.now() / 1000)
    for (const parsed of [first, second]) {
      assert.ok(parsed.issueTs >= before - 1 && parsed.issueTs <= after + 1, `issueTs ${parsed.issueTs}`)
      assert.ok(parsed.salt >= 1 && parsed.salt <= SALT_MAX, `salt ${parsed.salt}`)
      assert.equal(parsed.verifySignature(CERT), true)
    }
    assert.notEqual(first.salt, second.salt)
  })
})

describe('tokens built by the npm package are accepted by media-token inspect', { skip }, () => {
  for (const c of CASES) {
    test(`${c.name}: signatureValid with the right certificate, fields equal, invalid otherwise`, () => {
      const token = npmBuild(c, { expire: 600, privilegeExpire: 300 })
      const reference = npmParse(token)
      const ours = inspect(token, CERT)

      assert.equal(ours.signatureValid, true)
      assert.equal(ours.version, '007')
      assert.equal(ours.appId, APP_ID)
      assert.equal(ours.issueTs, reference.issueTs)
      assert.equal(ours.expire, 600)
      assert.equal(ours.expiresAt, reference.issueTs + 600)
      assert.equal(ours.salt, reference.salt)
      assert.deepEqual(ours.services, [
        {
          type: 'rtc',
          serviceType: 1,
          channelName: c.channel,
          account: packedAccount(c),
          privileges: Object.fromEntries(
            privilegeIds(c.role).map(id => [
              PRIVILEGE_NAMES[id - 1],
              { expire: 300, expiresAt: reference.issueTs + 300 },
            ]),
          ),
        },
      ])

      assert.equal(inspect(token, WRONG_CERT).signatureValid, false)
      assert.equal(inspect(token, CERT.toLowerCase()).signatureValid, false)
      assert.equal(inspect(token).signatureValid, null)
    })
  }

  test('privilege expire 0 (the npm default) ends with the token', () => {
    const token = RtcTokenBuilder.buildTokenWithUserAccount(APP_ID, CERT, 'room1', 'bob', RtcRole.SUBSCRIBER, 900)
    const ours = inspect(token, CERT)
    assert.equal(ours.signatureValid, true)
    assert.deepEqual(ours.services[0].privileges, { joinChannel: { expire: 0, expiresAt: ours.issueTs + 900 } })
  })

  test('strings that are not tokens make inspect exit non-zero', () => {
    const valid = npmBuild(CASES[0])
    for (const bad of ['', 'garbage', '006' + valid.slice(3), '007', '007AAAA', valid.slice(0, -8)]) {
      assert.notEqual(runInspect(bad, CERT).status, 0, `inspect accepted ${JSON.stringify(bad)}`)
    }
  })
})

describe('with the same issueTs and salt both implementations inflate to identical payloads', { skip }, () => {
  for (const c of CASES) {
    test(c.name, () => {
      const issueTs = 1700000000
      const salt = 12345678
      const npmToken = withPinnedClockAndSalt(issueTs, salt, () => npmBuild(c, { expire: 3600, privilegeExpire: 1800 }))
      const pinned = npmParse(npmToken)
      assert.equal(pinned.issueTs, issueTs, 'clock pin did not take')
      assert.equal(pinned.salt, salt, 'salt pin did not take')

      const ourToken = sign(c, { expire: 3600, privilegeExpire: 1800, issueTs, salt })
      assert.equal(payloadOf(ourToken).toString('hex'), payloadOf(npmToken).toString('hex'))
    })
  }
})
