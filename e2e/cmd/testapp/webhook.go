package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// webhook serves HTTPS on :port with the certificate in dir (tls.crt,
// tls.key), what the apiserver calls from a pod:
//
//	POST /validate   AdmissionReview: denies objects labelled e2e-deny=true
//	POST /mutate     AdmissionReview: adds the label e2e-mutated=true
//	POST /convert    ConversionReview between e2e.kubesplit.io v1 (spec.color)
//	                 and v2 (spec.colour)
//	GET  /apis/aggregated.e2e.kubesplit.io/v1[/hello]
//	                 an aggregated API: its discovery, and the serving pod's name
//
// The review types are written out here (their wire format is stable v1)
// so that testapp stays a small static binary without the API machinery.
func webhook(port, dir string) {
	host, _ := os.Hostname()
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("POST /validate", review(func(obj objectMeta) admissionResponse {
		if obj.Metadata.Labels["e2e-deny"] == "true" {
			return admissionResponse{Allowed: false, Status: &status{Code: 403, Message: "denied by the e2e webhook on " + host}}
		}
		return admissionResponse{Allowed: true}
	}))
	mux.HandleFunc("POST /mutate", review(func(obj objectMeta) admissionResponse {
		var patch []map[string]any
		if obj.Metadata.Labels == nil {
			patch = append(patch, map[string]any{"op": "add", "path": "/metadata/labels", "value": map[string]string{}})
		}
		patch = append(patch, map[string]any{"op": "add", "path": "/metadata/labels/e2e-mutated", "value": "true"})
		b, _ := json.Marshal(patch)
		pt := "JSONPatch"
		return admissionResponse{Allowed: true, PatchType: &pt, Patch: base64.StdEncoding.EncodeToString(b)}
	}))
	mux.HandleFunc("POST /convert", convert)
	gv := "aggregated.e2e.kubesplit.io/v1"
	mux.HandleFunc("GET /apis/"+gv, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
			"resources": []any{map[string]any{"name": "hello", "namespaced": false, "kind": "Hello", "verbs": []string{"get"}}}})
	})
	mux.HandleFunc("GET /apis/"+gv+"/hello", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, map[string]any{"kind": "Hello", "apiVersion": gv, "servedBy": host})
	})
	fmt.Printf("testapp webhook serving on :%s as %s\n", port, host)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv := &http.Server{Addr: ":" + port, Handler: logRequests(mux), ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	if err := srv.ListenAndServeTLS(dir+"/tls.crt", dir+"/tls.key"); err != nil && err != http.ErrServerClosed {
		fail(err.Error())
	}
}

func logRequests(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("%s %s %s\n", time.Now().Format(time.RFC3339), r.Method, r.URL.Path) // for kubectl logs
		h.ServeHTTP(w, r)
	})
}

type objectMeta struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

type status struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

type admissionResponse struct {
	UID       string  `json:"uid"`
	Allowed   bool    `json:"allowed"`
	Status    *status `json:"status,omitempty"`
	PatchType *string `json:"patchType,omitempty"`
	Patch     string  `json:"patch,omitempty"`
}

// review decodes an admission.k8s.io/v1 AdmissionReview and answers with
// decide's response for its object.
func review(decide func(objectMeta) admissionResponse) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Request struct {
				UID    string          `json:"uid"`
				Object json.RawMessage `json:"object"`
			} `json:"request"`
		}
		if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var obj objectMeta
		_ = json.Unmarshal(in.Request.Object, &obj)
		resp := decide(obj)
		resp.UID = in.Request.UID
		writeJSON(w, map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp})
	}
}

// convert answers an apiextensions.k8s.io/v1 ConversionReview: spec.color
// (v1) and spec.colour (v2) are the same field.
func convert(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Request struct {
			UID               string           `json:"uid"`
			DesiredAPIVersion string           `json:"desiredAPIVersion"`
			Objects           []map[string]any `json:"objects"`
		} `json:"request"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	from, to := "colour", "color"
	if strings.HasSuffix(in.Request.DesiredAPIVersion, "/v2") {
		from, to = "color", "colour"
	}
	out := make([]map[string]any, 0, len(in.Request.Objects))
	for _, o := range in.Request.Objects {
		o["apiVersion"] = in.Request.DesiredAPIVersion
		if spec, ok := o["spec"].(map[string]any); ok {
			if v, ok := spec[from]; ok {
				spec[to] = v
				delete(spec, from)
			}
		}
		out = append(out, o)
	}
	writeJSON(w, map[string]any{"apiVersion": "apiextensions.k8s.io/v1", "kind": "ConversionReview",
		"response": map[string]any{"uid": in.Request.UID, "convertedObjects": out, "result": map[string]string{"status": "Success"}}})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
