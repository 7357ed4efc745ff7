package org.latchkey;

import java.io.File;
import java.io.FileInputStream;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.security.KeyStore;
import java.security.UnrecoverableKeyException;
import java.util.Arrays;
import javax.crypto.Cipher;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;
import javax.crypto.spec.GCMParameterSpec;

/**
 * Seal and open small secrets with AES-256-GCM under a named key in a key store.
 *
 * <p>Why this class exists: pyjnius resolves overloaded Java methods by argument count and
 * picks the wrong {@code Cipher.init} (the {@code (int, Certificate)} one) for a
 * {@code SecretKey} (kivy/pyjnius #207, #757), so Python cannot call the JCA directly. Every
 * method here has one signature and takes or returns only strings and byte arrays.
 *
 * <p>The key store is switchable through {@link Keys}: {@code AndroidKeys} (Android-only,
 * beside this file) keeps a non-exportable key in {@code AndroidKeyStore}; {@link #inMemory}
 * and {@link #inFile} keep it in a PKCS12 key store on any JVM, which is how the tests run
 * this exact code. A box is {@code ivLength (1 byte) | iv | ciphertext+tag}; the provider
 * picks the IV (AndroidKeyStore insists on it).
 *
 * <p>Failures leave as one of two typed exceptions the Python side maps by class name:
 * {@link Lost} (the key or the ciphertext is gone for good: sign in again) and
 * {@link Unavailable} (locked or unreachable now: try later, wipe nothing). Anything else
 * propagates unchanged. Messages are a class name or one word, never data.
 */
public final class KeystoreBox {

    /** Where the named AES keys live; one implementation per key store. */
    public interface Keys {
        /** Return the key named {@code alias}, or null when there is none. */
        SecretKey find(String alias) throws GeneralSecurityException, IOException;

        /** Create, store and return a new AES-256 key named {@code alias}. */
        SecretKey create(String alias) throws GeneralSecurityException, IOException;

        /** Delete the key named {@code alias}; absent is fine. */
        void delete(String alias) throws GeneralSecurityException, IOException;
    }

    /** The key or the ciphertext is gone for good: invalidated, restored, tampered. */
    public static final class Lost extends GeneralSecurityException {
        private static final long serialVersionUID = 1L;

        public Lost(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** The key store refused for now (locked, not yet unlocked since boot, unreachable). */
    public static final class Unavailable extends GeneralSecurityException {
        private static final long serialVersionUID = 1L;

        public Unavailable(String message, Throwable cause) {
            super(message, cause);
        }
    }

    // Matched by name so this file compiles on a desktop JDK, where the Android classes
    // do not exist; superclasses are matched too (a provider may subclass them).
    private static final String[] LOST = {
        "android.security.keystore.KeyPermanentlyInvalidatedException",
        "javax.crypto.AEADBadTagException",
        "java.security.UnrecoverableKeyException",
    };
    private static final String[] UNAVAILABLE = {
        "android.security.keystore.UserNotAuthenticatedException",
        "java.security.KeyStoreException",
        "java.io.IOException",
    };

    private static final String TRANSFORMATION = "AES/GCM/NoPadding";
    private static final int TAG_BITS = 128;
    private static final int KEY_BITS = 256;

    private final Keys keys;

    public KeystoreBox(Keys keys) {
        this.keys = keys;
    }

    /** Return a box over a fresh PKCS12 key store held in this JVM only. */
    public static KeystoreBox inMemory() throws GeneralSecurityException, IOException {
        return new KeystoreBox(new StoreKeys(null, "latchkey".toCharArray()));
    }

    /** Return a box over a PKCS12 key store file (created on first key), re-read per call. */
    public static KeystoreBox inFile(String path, String password)
            throws GeneralSecurityException, IOException {
        return new KeystoreBox(new StoreKeys(new File(path), password.toCharArray()));
    }

    /**
     * Encrypt {@code plaintext} bound to {@code aad} under {@code alias}, creating the key.
     *
     * <p>A key the platform invalidated can never seal again, and every value sealed under
     * it is lost already, so it is replaced once; anything else propagates.
     */
    public byte[] seal(String alias, byte[] plaintext, byte[] aad) throws GeneralSecurityException {
        try {
            return sealOnce(alias, plaintext, aad);
        } catch (Lost lost) {
            deleteKey(alias);
            return sealOnce(alias, plaintext, aad);
        }
    }

    private byte[] sealOnce(String alias, byte[] plaintext, byte[] aad)
            throws GeneralSecurityException {
        try {
            SecretKey key = keys.find(alias);
            if (key == null) {
                key = keys.create(alias);
            }
            Cipher cipher = Cipher.getInstance(TRANSFORMATION);
            cipher.init(Cipher.ENCRYPT_MODE, key);
            cipher.updateAAD(aad);
            byte[] sealed = cipher.doFinal(plaintext);
            byte[] iv = cipher.getIV();
            byte[] box = new byte[1 + iv.length + sealed.length];
            box[0] = (byte) iv.length;
            System.arraycopy(iv, 0, box, 1, iv.length);
            System.arraycopy(sealed, 0, box, 1 + iv.length, sealed.length);
            return box;
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw classify(e);
        }
    }

    /** Decrypt a box made by {@link #seal} with the same {@code alias} and {@code aad}. */
    public byte[] open(String alias, byte[] box, byte[] aad) throws GeneralSecurityException {
        try {
            SecretKey key = keys.find(alias);
            if (key == null) {
                throw new Lost("key-missing", null);
            }
            int ivLength = box.length > 0 ? box[0] & 0xFF : 0;
            if (ivLength == 0 || box.length < 1 + ivLength + TAG_BITS / 8) {
                throw new Lost("truncated", null);
            }
            Cipher cipher = Cipher.getInstance(TRANSFORMATION);
            cipher.init(Cipher.DECRYPT_MODE, key,
                    new GCMParameterSpec(TAG_BITS, Arrays.copyOfRange(box, 1, 1 + ivLength)));
            cipher.updateAAD(aad);
            return cipher.doFinal(box, 1 + ivLength, box.length - 1 - ivLength);
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw classify(e);
        }
    }

    /** Return whether a key named {@code alias} exists. */
    public boolean hasKey(String alias) throws GeneralSecurityException {
        try {
            return keys.find(alias) != null;
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw classify(e);
        }
    }

    /** Delete the key named {@code alias}: every value sealed under it is lost. */
    public void deleteKey(String alias) throws GeneralSecurityException {
        try {
            keys.delete(alias);
        } catch (GeneralSecurityException | IOException | RuntimeException e) {
            throw classify(e);
        }
    }

    /** Return the secret key {@code alias} of {@code store}, or null when it has none. */
    public static SecretKey secretKey(KeyStore store, String alias, char[] password)
            throws GeneralSecurityException {
        if (!store.containsAlias(alias)) {
            return null;
        }
        Key key = store.getKey(alias, password);
        if (!(key instanceof SecretKey)) {
            throw new UnrecoverableKeyException("the entry is not a secret key");
        }
        return (SecretKey) key;
    }

    /** Return {@code e} as Lost or Unavailable when its cause chain says which; else as is. */
    static GeneralSecurityException classify(Exception e) {
        if (e instanceof Lost || e instanceof Unavailable) {
            return (GeneralSecurityException) e;
        }
        // Lost wins over Unavailable: a PKCS12 file opened with the wrong password is an
        // IOException caused by UnrecoverableKeyException, and that key is gone for good.
        String lost = firstMatch(e, LOST);
        if (lost != null) {
            return new Lost(lost, e);
        }
        String unavailable = firstMatch(e, UNAVAILABLE);
        if (unavailable != null) {
            return new Unavailable(unavailable, e);
        }
        if (e instanceof GeneralSecurityException) {
            return (GeneralSecurityException) e;
        }
        return new GeneralSecurityException(e.getClass().getName(), e);
    }

    private static String firstMatch(Throwable e, String[] names) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            for (Class<?> c = t.getClass(); c != null; c = c.getSuperclass()) {
                for (String name : names) {
                    if (name.equals(c.getName())) {
                        return t.getClass().getName();
                    }
                }
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return null;
    }

    /** AES keys in a PKCS12 key store: in memory, or in a file written atomically. */
    static final class StoreKeys implements Keys {
        private final File file;
        private final char[] password;
        private KeyStore memory;

        StoreKeys(File file, char[] password) throws GeneralSecurityException, IOException {
            this.file = file;
            this.password = password;
            if (file == null) {
                memory = KeyStore.getInstance("PKCS12");
                memory.load(null, null);
            }
        }

        private KeyStore store() throws GeneralSecurityException, IOException {
            if (memory != null) {
                return memory;
            }
            KeyStore store = KeyStore.getInstance("PKCS12");
            if (file.exists()) {
                try (InputStream in = new FileInputStream(file)) {
                    store.load(in, password);
                }
            } else {
                store.load(null, null);
            }
            return store;
        }

        private void persist(KeyStore store) throws GeneralSecurityException, IOException {
            if (memory != null) {
                return;
            }
            File tmp = new File(file.getPath() + ".tmp");
            try (FileOutputStream out = new FileOutputStream(tmp)) {
                store.store(out, password);
                out.getFD().sync();
            }
            if (!tmp.renameTo(file)) {
                throw new IOException("could not replace the key store file");
            }
        }

        @Override
        public SecretKey find(String alias) throws GeneralSecurityException, IOException {
            return secretKey(store(), alias, password);
        }

        @Override
        public SecretKey create(String alias) throws GeneralSecurityException, IOException {
            KeyStore store = store();
            KeyGenerator generator = KeyGenerator.getInstance("AES");
            generator.init(KEY_BITS);
            SecretKey key = generator.generateKey();
            store.setEntry(alias, new KeyStore.SecretKeyEntry(key),
                    new KeyStore.PasswordProtection(password));
            persist(store);
            return key;
        }

        @Override
        public void delete(String alias) throws GeneralSecurityException, IOException {
            KeyStore store = store();
            if (store.containsAlias(alias)) {
                store.deleteEntry(alias);
                persist(store);
            }
        }
    }
}
