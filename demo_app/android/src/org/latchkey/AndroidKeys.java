package org.latchkey;

import android.content.Context;
import android.content.SharedPreferences;
import android.security.keystore.KeyGenParameterSpec;
import android.security.keystore.KeyProperties;
import java.io.IOException;
import java.security.GeneralSecurityException;
import java.security.KeyPairGenerator;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.cert.Certificate;
import java.security.spec.ECGenParameterSpec;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;

/**
 * Keep {@link KeystoreBox}'s keys in {@code AndroidKeyStore}: the Android-only seam.
 *
 * <p>Why it is separate: {@code KeyGenParameterSpec} and SharedPreferences exist only on
 * Android, so this is the one Java file the desktop tests cannot run (everything else, the
 * cipher work included, runs on a desktop JVM in tests/sdk/test_android_jvm.py). It only
 * finds, creates and deletes keys and reads and writes one prefs file; keep it that small.
 * The key is AES-256 for GCM without padding, non-exportable, with a random IV the Keystore
 * picks for every encryption. {@link #deviceKeys} does the same for {@link DeviceKeys}: a
 * non-exportable EC P-256 signing key (the DPoP key), generated inside the Keystore.
 */
public final class AndroidKeys implements KeystoreBox.Keys {
    private static final String PROVIDER = "AndroidKeyStore";

    private final KeyStore store;

    private AndroidKeys(KeyStore store) {
        this.store = store;
    }

    /** Return a box over this app's AndroidKeyStore. */
    public static KeystoreBox box() throws GeneralSecurityException, IOException {
        KeyStore store = KeyStore.getInstance(PROVIDER);
        store.load(null);
        return new KeystoreBox(new AndroidKeys(store));
    }

    /** Return DPoP signing keys in this app's AndroidKeyStore. */
    public static DeviceKeys deviceKeys() throws GeneralSecurityException, IOException {
        KeyStore store = KeyStore.getInstance(PROVIDER);
        store.load(null);
        return new DeviceKeys(new SigningPairs(store));
    }

    /** EC P-256 signing keys generated in AndroidKeyStore; the private half never leaves it. */
    static final class SigningPairs implements DeviceKeys.Pairs {
        private final KeyStore store;

        SigningPairs(KeyStore store) {
            this.store = store;
        }

        @Override
        public PrivateKey privateKey(String alias) throws GeneralSecurityException {
            return store.containsAlias(alias) ? (PrivateKey) store.getKey(alias, null) : null;
        }

        @Override
        public PublicKey publicKey(String alias) throws GeneralSecurityException {
            Certificate certificate = store.getCertificate(alias);
            return certificate == null ? null : certificate.getPublicKey();
        }

        @Override
        public void create(String alias) throws GeneralSecurityException {
            KeyPairGenerator generator =
                    KeyPairGenerator.getInstance(KeyProperties.KEY_ALGORITHM_EC, PROVIDER);
            generator.initialize(new KeyGenParameterSpec.Builder(alias, KeyProperties.PURPOSE_SIGN)
                    .setAlgorithmParameterSpec(new ECGenParameterSpec("secp256r1"))
                    .setDigests(KeyProperties.DIGEST_SHA256)
                    .build());
            generator.generateKeyPair();
        }

        @Override
        public void delete(String alias) throws GeneralSecurityException {
            store.deleteEntry(alias);
        }
    }

    @Override
    public SecretKey find(String alias) throws GeneralSecurityException {
        return KeystoreBox.secretKey(store, alias, null);
    }

    @Override
    public SecretKey create(String alias) throws GeneralSecurityException {
        KeyGenerator generator = KeyGenerator.getInstance(KeyProperties.KEY_ALGORITHM_AES, PROVIDER);
        generator.init(new KeyGenParameterSpec.Builder(
                alias, KeyProperties.PURPOSE_ENCRYPT | KeyProperties.PURPOSE_DECRYPT)
                .setBlockModes(KeyProperties.BLOCK_MODE_GCM)
                .setEncryptionPaddings(KeyProperties.ENCRYPTION_PADDING_NONE)
                .setKeySize(256)
                .setRandomizedEncryptionRequired(true)
                .build());
        return generator.generateKey();
    }

    @Override
    public void delete(String alias) throws GeneralSecurityException {
        store.deleteEntry(alias);
    }

    /**
     * One private SharedPreferences file, with one signature per method.
     *
     * <p>{@code Context.getSharedPreferences} has a {@code (File, int)} overload beside
     * {@code (String, int)} that reflection (and so pyjnius) sees; calling it from here
     * leaves pyjnius nothing to resolve. Writes {@code commit()}: {@code apply()} could
     * lose a rotated token when the OS kills the app right after.
     */
    public static final class Prefs {
        private final SharedPreferences prefs;

        public Prefs(Context context, String name) {
            prefs = context.getSharedPreferences(name, Context.MODE_PRIVATE);
        }

        public String get(String key) {
            return prefs.getString(key, null);
        }

        public boolean put(String key, String value) {
            return prefs.edit().putString(key, value).commit();
        }

        public boolean remove(String key) {
            return prefs.edit().remove(key).commit();
        }
    }
}
