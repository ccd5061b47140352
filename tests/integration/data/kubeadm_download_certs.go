// Opens a kubeadm-certs Secret the way kubeadm's DownloadCerts does (cmd/kubeadm/app/phases/copycerts:
// getDataFromSecret, and cmd/kubeadm/app/util/crypto: DecryptBytes), with Go's own crypto/aes and crypto/cipher.
// Usage: go run kubeadm_download_certs.go HEXKEY < secret.json; prints {"data key": "sha256 of the file", ...}
// ("" for an empty value); exits 1 when a value does not open (kubeadm then fails the whole Secret).
package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
)

type secret struct {
	Data map[string][]byte `json:"data"` // base64 in JSON, as client-go decodes a Secret's data
}

func decrypt(data, key []byte) ([]byte, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	n := gcm.NonceSize()
	if len(data) < n {
		return nil, fmt.Errorf("size of data is less than the nonce")
	}
	return gcm.Open(nil, data[:n], data[n:], nil)
}

func main() {
	key, err := hex.DecodeString(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "error decoding certificate key:", err)
		os.Exit(1)
	}
	var s secret
	if err := json.NewDecoder(os.Stdin).Decode(&s); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	out := map[string]string{}
	for name, sealed := range s.Data {
		if len(sealed) == 0 {
			out[name] = ""
			continue
		}
		plain, err := decrypt(sealed, key)
		if err != nil {
			fmt.Fprintln(os.Stderr, "error decoding secret data with provided key:", name, err)
			os.Exit(1)
		}
		sum := sha256.Sum256(plain)
		out[name] = hex.EncodeToString(sum[:])
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
