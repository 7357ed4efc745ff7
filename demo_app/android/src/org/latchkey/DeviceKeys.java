package org.latchkey;

import java.io.IOException;
import java.math.BigInteger;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.Signature;
import java.security.interfaces.ECPublicKey;
import java.security.spec.ECGenParameterSpec;
import java.util.HashMap;
import java.util.Map;

/**
 * Sign DPoP proofs (RFC 9449) with a non-exportable EC P-256 key named by an alias.
 *
 * <p>Why Java: the private key never leaves the key store, so the signature has to be made
 * where the key is; and {@code Signature.initSign} is overloaded ({@code (PrivateKey)} and
 * {@code (PrivateKey, SecureRandom)}), which pyjnius resolves badly, as it does
 * {@code Cipher.init} (see {@link KeystoreBox}). Every method here has one signature and
 * takes or returns only strings and byte arrays: {@link #sign} returns the JWS form of an
 * ES256 signature ({@code r || s}, 64 bytes, RFC 7518 s3.4), {@link #publicPoint} the
 * public key's {@code x || y} (32 bytes each) for the proof's {@code jwk} header.
 *
 * <p>The key store is switchable through {@link Pairs}: {@code AndroidKeys.deviceKeys()}
 * (Android-only) generates the key inside {@code AndroidKeyStore}, where the private half
 * cannot be exported; {@link #inMemory} keeps key pairs in this JVM, which is how the tests
 * run this exact signing code on a desktop (a desktop JDK cannot put a key pair in a
 * {@code KeyStore} without a certificate, which only Android makes for itself). Failures
 * leave as {@link KeystoreBox.Lost} or {@link KeystoreBox.Unavailable}, as the box's do.
 */
public final class DeviceKeys {

    /** Where the named key pairs live; one implementation per key store. */
    public interface Pairs {
        /** Return the private key named {@code alias}, or null when there is none. */
        PrivateKey privateKey(String alias) throws GeneralSecurityException, IOException;

        /** Return the public key named {@code alias}, or null when there is none. */
        PublicKey publicKey(String alias) throws GeneralSecurityException, IOException;

        /** Create and keep a new EC P-256 signing key pair named {@code alias}. */
        void create(String alias) throws GeneralSecurityException, IOException;

        /** Delete the key pair named {@code alias}; absent is fine. */
        void delete(String alias) throws GeneralSecurityException, IOException;
    }

    private static final int COORDINATE_BYTES = 32;

    private final Pairs pairs;

    public DeviceKeys(Pairs pairs) {
        this.pairs = pairs;
    }

    /** Return signing keys held in this JVM only (desktop tests). */
    public static DeviceKeys inMemory() {
        return new DeviceKeys(new MemoryPairs());
    }

    /** Return whether a key named {@code alias} exists. */
    public boolean hasKey(String alias) throws GeneralSecurityException {
        try {
            return pairs.privateKey(alias) != null;
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw KeystoreBox.classify(e);
        }
    }

    /** Create the key named {@code alias} unless it exists. */
    public void ensureKey(String alias) throws GeneralSecurityException {
        try {
            if (pairs.privateKey(alias) == null) {
                pairs.create(alias);
            }
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw KeystoreBox.classify(e);
        }
    }

    /** Sign {@code data} with SHA256withECDSA; return the 64-byte {@code r || s}. */
    public byte[] sign(String alias, byte[] data) throws GeneralSecurityException {
        try {
            PrivateKey key = pairs.privateKey(alias);
            if (key == null) {
                throw new KeystoreBox.Lost("key-missing", null);
            }
            Signature signature = Signature.getInstance("SHA256withECDSA");
            signature.initSign(key);
            signature.update(data);
            return derToJose(signature.sign());
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw KeystoreBox.classify(e);
        }
    }

    /** Return the public key's affine {@code x || y}, 32 bytes each. */
    public byte[] publicPoint(String alias) throws GeneralSecurityException {
        try {
            PublicKey key = pairs.publicKey(alias);
            if (key == null) {
                throw new KeystoreBox.Lost("key-missing", null);
            }
            if (!(key instanceof ECPublicKey)) {
                throw new KeystoreBox.Lost("not-an-ec-key", null);
            }
            ECPublicKey ec = (ECPublicKey) key;
            byte[] point = new byte[2 * COORDINATE_BYTES];
            unsigned(ec.getW().getAffineX(), point, 0);
            unsigned(ec.getW().getAffineY(), point, COORDINATE_BYTES);
            return point;
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw KeystoreBox.classify(e);
        }
    }

    /** Delete the key named {@code alias}: every session bound to it is over. */
    public void deleteKey(String alias) throws GeneralSecurityException {
        try {
            pairs.delete(alias);
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw KeystoreBox.classify(e);
        }
    }

    private static void unsigned(BigInteger value, byte[] out, int offset) {
        byte[] raw = value.toByteArray();
        int skip = raw.length > COORDINATE_BYTES ? raw.length - COORDINATE_BYTES : 0;
        int length = raw.length - skip;
        System.arraycopy(raw, skip, out, offset + COORDINATE_BYTES - length, length);
    }

    /** Turn a DER {@code SEQUENCE { INTEGER r, INTEGER s }} into JOSE's {@code r || s}. */
    public static byte[] derToJose(byte[] der) throws GeneralSecurityException {
        int[] at = {0};
        expect(der, at, 0x30);
        int end = length(der, at) + at[0];
        if (end != der.length) {
            throw new GeneralSecurityException("bad-signature-encoding");
        }
        byte[] out = new byte[2 * COORDINATE_BYTES];
        for (int part = 0; part < 2; part++) {
            expect(der, at, 0x02);
            int size = length(der, at);
            byte[] value = new byte[size];
            System.arraycopy(der, at[0], value, 0, size);
            at[0] += size;
            unsigned(new BigInteger(1, value), out, part * COORDINATE_BYTES);
        }
        return out;
    }

    private static void expect(byte[] der, int[] at, int tag) throws GeneralSecurityException {
        if (at[0] >= der.length || (der[at[0]] & 0xFF) != tag) {
            throw new GeneralSecurityException("bad-signature-encoding");
        }
        at[0]++;
    }

    private static int length(byte[] der, int[] at) throws GeneralSecurityException {
        if (at[0] >= der.length) {
            throw new GeneralSecurityException("bad-signature-encoding");
        }
        int first = der[at[0]++] & 0xFF;
        if (first < 0x80) {
            return first;
        }
        int count = first & 0x7F;
        if (count > 2 || at[0] + count > der.length) {
            throw new GeneralSecurityException("bad-signature-encoding");
        }
        int value = 0;
        for (int i = 0; i < count; i++) {
            value = (value << 8) | (der[at[0]++] & 0xFF);
        }
        return value;
    }

    /** Key pairs in a map of this JVM: the desktop stand-in for AndroidKeyStore. */
    static final class MemoryPairs implements Pairs {
        private final Map<String, KeyPair> pairs = new HashMap<>();

        @Override
        public synchronized PrivateKey privateKey(String alias) {
            KeyPair pair = pairs.get(alias);
            return pair == null ? null : pair.getPrivate();
        }

        @Override
        public synchronized PublicKey publicKey(String alias) {
            KeyPair pair = pairs.get(alias);
            return pair == null ? null : pair.getPublic();
        }

        @Override
        public synchronized void create(String alias) throws GeneralSecurityException {
            KeyPairGenerator generator = KeyPairGenerator.getInstance("EC");
            generator.initialize(new ECGenParameterSpec("secp256r1"));
            pairs.put(alias, generator.generateKeyPair());
        }

        @Override
        public synchronized void delete(String alias) {
            pairs.remove(alias);
        }
    }
}
