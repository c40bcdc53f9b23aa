// Offers prints the offers of one dealer in one DDD from carat-catalogd, then (without
// --once) again at each change (a long-poll). Go standard library only. Usage:
// go run offers.go SOCKET DEALER DDD [--once]; exit 2: no such dealer or DDD, 3: not synced yet.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

type amount struct {
	Key    string `json:"amount_key"`
	Min    int64  `json:"min_amount"`
	Max    int64  `json:"max_amount"`
	Amount int64  `json:"amount"`
}

type answer struct { // the offers, or the error
	Dealer     string `json:"dealer_code"`
	DDD        string `json:"ddd"`
	Hash       string `json:"general_hash"`
	Stale      bool   `json:"stale"`
	CheckedAt  string `json:"checked_at"`
	Categories []struct {
		Ranges []amount `json:"amount_ranges"`
		Fixed  []amount `json:"fixed_amounts"`
	} `json:"categories"`
	Error struct{ Code, Message string } `json:"error"`
}

// brl formats integer centavos as reais: 123456 -> "R$ 1.234,56".
func brl(centavos int64) string {
	s := strconv.FormatInt(centavos/100, 10)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "." + s[i:]
	}
	return fmt.Sprintf("R$ %s,%02d", s, centavos%100)
}

func show(o answer) {
	fmt.Printf("dealer %s, DDD %s, catalog %s\n", o.Dealer, o.DDD, o.Hash)
	if o.Stale {
		fmt.Printf("warning: stale catalog, last confirmed by Carat at %s\n", o.CheckedAt)
	}
	for _, c := range o.Categories {
		for _, r := range c.Ranges {
			fmt.Printf("%s  %s – %s\n", r.Key, brl(r.Min), brl(r.Max))
		}
		for _, f := range c.Fixed {
			fmt.Printf("%s  %s\n", f.Key, brl(f.Amount))
		}
	}
}

// retryOrExit reports msg, then exits with code under --once, or waits before the next try.
func retryOrExit(once bool, code int, msg string) {
	fmt.Fprintln(os.Stderr, msg)
	if once {
		os.Exit(code)
	}
	time.Sleep(5 * time.Second)
}

func main() {
	once := len(os.Args) == 5 && os.Args[4] == "--once"
	if len(os.Args) != 4 && !once {
		retryOrExit(true, 1, "usage: go run offers.go SOCKET DEALER DDD [--once]")
	}
	client := &http.Client{Transport: &http.Transport{ // HTTP over the daemon's Unix socket
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", os.Args[1])
		},
	}}
	url := "http://localhost/v1/catalogs/normal/dealers/" + os.Args[2] + "/ddds/" + os.Args[3]
	for etag := ""; ; {
		req, _ := http.NewRequest("GET", url, nil)
		if etag != "" { // wait up to 5 minutes for a change; a 304 if none
			req.URL.RawQuery = "wait=300"
			req.Header.Set("If-None-Match", etag)
		}
		resp, err := client.Do(req)
		if err != nil { // the daemon stopped or restarts: try again
			retryOrExit(once, 1, "error: "+err.Error())
			continue
		}
		var o answer
		err = json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		msg := "error: " + o.Error.Code + ": " + o.Error.Message // match on the code; the message is for people
		switch {
		case resp.StatusCode == http.StatusNotModified: // unchanged
		case err != nil:
			retryOrExit(true, 1, "error: "+err.Error())
		case resp.StatusCode == http.StatusOK:
			show(o)
			etag = resp.Header.Get("ETag")
		case resp.StatusCode == http.StatusServiceUnavailable: // not synced yet: ask again soon
			retryOrExit(once, 3, msg)
		case resp.StatusCode == http.StatusNotFound: // no such dealer or DDD
			retryOrExit(true, 2, msg)
		default:
			retryOrExit(true, 1, msg)
		}
		if once {
			return
		}
	}
}
