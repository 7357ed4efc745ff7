package org.latchkey;

import android.security.keystore.KeyGenParameterSpec;
import android.security.keystore.KeyProperties;
import java.io.IOException;
import java.security.GeneralSecurityException;
import java.security.Key;
import java.security.KeyStore;
import java.security.UnrecoverableKeyException;
import javax.crypto.KeyGenerator;
import javax.crypto.SecretKey;

/**
 * Keep {@link KeystoreBox}'s keys in {@code AndroidKeyStore}: the Android-only seam.
 *
 * <p>Why it is separate: {@code KeyGenParameterSpec} exists only on Android, so this is the
 * one Java file the desktop tests cannot compile or run (everything else, the cipher work
 * included, runs on a desktop JVM in tests/sdk/test_android_jvm.py). It only finds,
 * creates and deletes keys; keep it that small. The key is AES-256 for GCM without
 * padding, non-exportable, with a random IV the Keystore picks for every encryption.
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

    @Override
    public SecretKey find(String alias) throws GeneralSecurityException {
        if (!store.containsAlias(alias)) {
            return null;
        }
        Key key = store.getKey(alias, null);
        if (!(key instanceof SecretKey)) {
            throw new UnrecoverableKeyException("the entry is not a secret key");
        }
        return (SecretKey) key;
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
}
