package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/velo-run/velo/internal/api"
)

// DeployCanary uploads a new version of component name as a canary: once
// ready it takes weight percent (1-99) of the calls, the live version the
// rest, until it is promoted.
func (c *Client) DeployCanary(ctx context.Context, name string, archive io.Reader, weight int) (api.Deployment, error) {
	var out api.Deployment
	err := c.do(ctx, http.MethodPost, componentPath(name, "/deployments")+"?canary="+strconv.Itoa(weight), archive, "application/gzip", &out)
	return out, err
}

// Promote gives deployment of component name weight percent of the calls:
// 1-99 as a canary, 100 live, 0 none.
func (c *Client) Promote(ctx context.Context, name string, deployment int64, weight int) (api.Deployment, error) {
	body, err := json.Marshal(api.Promote{Weight: weight})
	if err != nil {
		return api.Deployment{}, fmt.Errorf("encode promote: %w", err)
	}
	var out api.Deployment
	err = c.do(ctx, http.MethodPost, componentPath(name, "/deployments/"+strconv.FormatInt(deployment, 10)+"/promote"), bytes.NewReader(body), "application/json", &out)
	return out, err
}
