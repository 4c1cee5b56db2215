#include "tokens/identity.h"

#include <gtest/gtest.h>

namespace {

TEST(Identity, AcceptsCanonicalImsPublicIdentities) {
  for (const char* id :
       {"sip:alice@ims.example.net", "sips:bob@ims.example.net", "sip:+12015550123@ims.example.net",
        "sip:a.b-c_d%20e@example.com", "sip:user@192.0.2.1", "sip:user@[2001:db8::1]",
        "tel:+12015550123", "tel:+1-201-555-0123", "tel:+44(0)20.7946.0000",
        "sip:bridge1@conf.ims.example.net"}) {
    EXPECT_TRUE(tokens::is_ims_identity(id))
        << id << ": " << tokens::ims_identity_error(id).value_or("");
  }
}

TEST(Identity, RejectsAnythingElseWithAReason) {
  for (const char* id : {"",
                         "alice",
                         "alice@ims.example.net",
                         "http://ims.example.net",
                         "SIP:alice@example.net",
                         "sip:",
                         "sip:alice",
                         "sip:@example.net",
                         "sip:alice@",
                         "sip:alice@example.net:5060",
                         "sip:alice@example.net;transport=tcp",
                         "sip:alice@example.net?subject=x",
                         "sip:al ice@example.net",
                         "sip:alice@exa_mple.net",
                         "sip:alice@-example.net",
                         "sip:a@b@example.net",
                         "sip:alice@Example.net",
                         "sip:alice@example.net.",
                         "sip:al%2gce@example.net",
                         "sip:alice@999.1.1.1.1",
                         "sip:alice@[::1",
                         "tel:12015550123",
                         "tel:+",
                         "tel:+1x",
                         "tel:+1234567890123456",
                         "tel:+1;phone-context=example.net",
                         "sip:alice@example.123",
                         "sip:<alice>@example.net",
                         "sip:alice@example.net\n",
                         "sips:b\xc3\xa9@example.net"}) {
    const auto error = tokens::ims_identity_error(id);
    EXPECT_TRUE(error.has_value()) << "accepted: " << id;
    if (error) {
      EXPECT_FALSE(error->empty());
    }
  }
  EXPECT_FALSE(tokens::is_ims_identity("sip:" + std::string(250, 'a') + "@example.net"));
}

TEST(Identity, KindNames) {
  EXPECT_EQ(tokens::kind_name(tokens::IdentityKind::bridge), "bridge");
  EXPECT_EQ(tokens::parse_kind("subscriber"), tokens::IdentityKind::subscriber);
  EXPECT_FALSE(tokens::parse_kind("router").has_value());
}

}  // namespace
